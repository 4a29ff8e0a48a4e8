"""What reports: stored runs -> tables (markdown, LaTeX), notes, statistics, breakdowns, plots, the
README headline and the regression check."""
