"""RecBole 1.2.1 sequential models trained on OUR leave-one-out split and scored by OUR evaluator.

The split is written as RecBole benchmark files (`.train/.valid/.test.inter`, `.item`), which RecBole
takes as the split itself (no filtering, no re-splitting). Train rows are one per prefix, the
augmentation RecBole usually does. After RecBole's own early stopping on validation, we reload its
best checkpoint, ask `full_sort_predict` for every item's score and map RecBole's internal ids back
to ours. RecBole's metric numbers are never reported (its evaluator does not mask history).

Under the runner's checkpoint key, the training state is saved after every epoch (`baselines.resume`)
and a stopped cell resumes at its next epoch, ending with the same weights as an unstopped one: RecBole
models on ML-1M take 2-100 min an epoch on 2 CPU cores, longer than a session for most of them.
"""
from __future__ import annotations

import copy
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from baselines import resume
from baselines.recbole_compat import hidden_argv, import_recbole, load_checkpoint
from bench.models import FitContext
from bench.precision import resolve_device
from bench.split import Split

NEEDS_NEGATIVES = {"FPMC", "TransRec", "SINE"}  # pairwise models: BPR with sampled negatives


def write_benchmark_files(split: Split, folder: Path, name: str, max_len: int) -> None:
    """Our split as RecBole atomic benchmark files; tokens are our item indices."""
    folder.mkdir(parents=True, exist_ok=True)
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def row(u: int, hist: np.ndarray, target: int) -> str:
        return f"{u}\t{' '.join(map(str, hist[-max_len:]))}\t{target}\n"

    with open(folder / f"{name}.train.inter", "w") as f:
        f.write(head)
        for u, seq in enumerate(split.train):
            for t in range(1, len(seq)):
                f.write(row(u, seq[:t], seq[t]))
    with open(folder / f"{name}.valid.inter", "w") as f:
        f.write(head)
        for u in range(split.n_users):
            f.write(row(u, split.train[u], split.valid[u]))
    with open(folder / f"{name}.test.inter", "w") as f:
        f.write(head)
        for u in range(split.n_users):
            f.write(row(u, np.append(split.train[u], split.valid[u]), split.test[u]))
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\n" + "".join(f"{i}\n" for i in range(split.n_items)))


class RecBoleModel:
    def __init__(self, model: str = "SASRec", epochs: int = 50, patience: int = 5, max_len: int = 50,
                 batch_size: int = 256, lr: float = 1e-3, config: dict | None = None, threads: int | None = None,
                 device: str = "auto"):
        self.model_name, self.epochs, self.patience, self.max_len = model, epochs, patience, max_len
        self.device = resolve_device(device)  # RecBole's own GPU path (use_gpu) where there is a GPU
        self.batch_size, self.lr, self.extra, self.threads = batch_size, lr, dict(config or {}), threads

    def recbole_config(self, data_path: Path, name: str, seed: int, checkpoint_dir: Path) -> dict:
        cfg = {
            "data_path": str(data_path), "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
            "alias_of_item_id": ["item_id_list"],  # else item_id_list gets its own vocabulary (scrambled ids)
            "MAX_ITEM_LIST_LENGTH": self.max_len, "epochs": self.epochs, "stopping_step": self.patience,
            "train_batch_size": self.batch_size, "eval_batch_size": 1024, "learning_rate": self.lr,
            "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
            "use_gpu": self.device.startswith("cuda"), "gpu_id": self.device.partition(":")[2] or "0", "seed": seed, "reproducibility": True, "show_progress": False,
            "checkpoint_dir": str(checkpoint_dir), "log_wandb": False, "state": "WARNING",
        }
        if self.model_name in NEEDS_NEGATIVES:
            cfg.update(loss_type="BPR", train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
        else:
            cfg.update(loss_type="CE", train_neg_sample_args=None)
        cfg.update(self.extra)
        return cfg

    def fit(self, split: Split, ctx: FitContext) -> None:
        import_recbole()
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_seed

        torch.set_num_threads(self.threads or os.cpu_count() or 1)
        name = "bench"
        data_path = Path(ctx.workdir) / "recbole-data"
        write_benchmark_files(split, data_path / name, name, self.max_len)
        with hidden_argv():
            config = Config(model=self.model_name, dataset=name,
                            config_dict=self.recbole_config(data_path, name, ctx.seed, Path(ctx.workdir) / "recbole-ckpt"))
        config["device"] = torch.device(self.device)  # RecBole picks cuda wherever one is visible; ours decides
        init_seed(config["seed"], config["reproducibility"])
        logging.getLogger().setLevel(logging.WARNING)
        dataset = create_dataset(config)
        train_data, valid_data, self.test_data = data_preparation(config, dataset)
        model = get_model(config["model"])(config, train_data._dataset).to(self.device)
        self.trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        key, path = ctx.extra.get("checkpoint_key"), Path(ctx.workdir) / resume.FILE
        loaders = (train_data, valid_data)
        saved = resume.load(path, key, []) if key else None  # last: building the model drew from torch's RNG
        self.resumed_at_epoch, self.fit_seconds_before_resume, best = None, 0.0, {"state": None, "epoch": None}
        if saved is not None:
            self._restore(saved, loaders, best)
            ctx.curves.extend(saved["curves"])
            tqdm.write(f"RecBole {self.model_name}: resuming at epoch {self.resumed_at_epoch} from {path}")
        t0 = time.perf_counter() - self.fit_seconds_before_resume

        def after_validation(epoch: int, valid_score: float) -> None:  # RecBole calls this after each validation
            ctx.curves.append({"epoch": epoch + 1, "recbole_valid_NDCG@10_unmasked": float(valid_score),
                               "elapsed_seconds": round(time.perf_counter() - t0, 2)})
            tr = self.trainer
            if tr.cur_step == 0:  # RecBole's early stopping just took this epoch as its best
                best.update(state=copy.deepcopy(tr.model.state_dict()), epoch=epoch + 1)
            if key and tr.cur_step <= tr.stopping_step and epoch + 1 < tr.epochs:  # else training ends now
                resume.save(path, key, {
                    "epoch": epoch + 1, "epochs": tr.epochs, "net": tr.model.state_dict(), "opt": tr.optimizer.state_dict(),
                    "stopping": (float(tr.best_valid_score), int(tr.cur_step)),
                    "best_result": {k: float(v) for k, v in tr.best_valid_result.items()},
                    "best_state": best["state"], "best_epoch": best["epoch"], "curves": list(ctx.curves),
                    "seconds": time.perf_counter() - t0, "rngs": _host_rngs(loaders)}, [])

        self.best_valid, _ = self.trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False,
                                              callback_fn=after_validation)
        if key:
            resume.clear(path)
        self.epochs_run = len(ctx.curves)
        scores = [row["recbole_valid_NDCG@10_unmasked"] for row in ctx.curves]
        self.best_epoch = int(np.argmax(scores)) + 1 if scores else None  # RecBole keeps the first best
        model.load_state_dict(load_checkpoint(self.trainer.saved_model_file)["state_dict"])
        model.eval()
        self.model, self.dataset, self.config = model, dataset, config
        tok2id = dataset.field2token_id["item_id"]
        self.to_recbole = np.array([tok2id[str(i)] for i in range(split.n_items)])  # our index -> RecBole id
        self.user_tok2id = dataset.field2token_id["user_id"]

    def _restore(self, saved: dict, loaders: tuple, best: dict) -> None:
        """Put a saved training state into the trainer. RecBole's best-model file is written again
        from the saved best weights, since RecBole names that file afresh on every start."""
        tr = self.trainer
        tr.best_valid_score, tr.cur_step = saved["stopping"]
        tr.best_valid_result = saved["best_result"]
        best.update(state=saved["best_state"], epoch=saved["best_epoch"])
        if best["state"] is not None:
            tr.model.load_state_dict(best["state"])
            tr._save_checkpoint(best["epoch"] - 1, verbose=False)
        tr.model.load_state_dict(saved["net"])
        tr.optimizer.load_state_dict(saved["opt"])
        tr.start_epoch = saved["epoch"]
        _set_host_rngs(loaders, saved["rngs"])
        self.resumed_at_epoch, self.fit_seconds_before_resume = saved["epoch"] + 1, saved["seconds"]

    @torch.no_grad()
    def predict(self, histories: list[np.ndarray], users: np.ndarray) -> np.ndarray:
        from recbole.data.interaction import Interaction

        m = self.model
        # CORE sizes its position table by the longest training sequence, which can be under max_len
        tables = [mod.num_embeddings for name, mod in m.named_modules() if name.split(".")[-1] == "position_embedding"]
        width = min([self.max_len, *tables])
        seq = np.zeros((len(histories), width), dtype=np.int64)  # left-aligned, zero-padded
        lengths = np.zeros(len(histories), dtype=np.int64)
        for row, h in enumerate(histories):
            h = self.to_recbole[np.asarray(h[-width:], dtype=np.int64)]
            seq[row, : len(h)] = h
            lengths[row] = len(h)
        inter = Interaction({
            m.ITEM_SEQ: torch.from_numpy(seq),
            m.ITEM_SEQ_LEN: torch.from_numpy(lengths),
            m.USER_ID: torch.tensor([self.user_tok2id[str(u)] for u in users]),
        })
        scores = m.full_sort_predict(inter.to(self.device)).view(len(histories), -1).float().cpu().numpy()
        return scores[:, self.to_recbole]  # column j = our item j; RecBole's padding column dropped

    def recbole_test_metrics(self) -> dict:
        """RecBole's own evaluator on the same test split (no history masking): for the
        faithfulness check only, never for tables."""
        return dict(self.trainer.evaluate(self.test_data, load_best_model=False, show_progress=False))

    def info(self) -> dict:
        return {"recbole_model": self.model_name, "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "best_valid_NDCG@10_recbole_unmasked": float(self.best_valid),
                "parameters": sum(p.numel() for p in self.model.parameters()), "device": self.device,
                "resumed_at_epoch": self.resumed_at_epoch, "fit_seconds_before_resume": round(self.fit_seconds_before_resume, 3)}


def _host_rngs(loaders: tuple) -> dict:
    """The random states an epoch draws from beyond torch's (which `resume` keeps): batch order
    (each loader's generator), numpy's and Python's global ones (RecBole's negative samplers)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"loaders": [d.generator.get_state() for d in loaders], "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}


def _set_host_rngs(loaders: tuple, rngs: dict) -> None:
    for d, state in zip(loaders, rngs["loaders"]):
        d.generator.set_state(state)
    random.setstate(rngs["python"])
    name, keys, pos, has_gauss, gauss = rngs["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
