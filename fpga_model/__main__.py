"""python -m fpga_model --checkpoint runs/nb03/shakespeare/ckpt.ckpt --prompt "ROMEO:"

Runs a trained mmf model on the simulated accelerator, greedy, and prints its tokens beside the CPU
integer path's (cpu_reference.py), whether they agree, the largest logit difference, and the cycle
report of one token (cycles, ms, tokens/s, energy at the paper's board power, per-unit busy/stall).
Without a checkpoint, --random-model V,D,L runs a seeded random model on token ids (--prompt-ids).
"""
import argparse
import sys

import numpy as np

from .accelerator import Accelerator
from .cpu_reference import greedy_cpu, integer_model
from .hardware import Hardware
from .paper_data import board_power_w


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m fpga_model", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="an mmf checkpoint (python -m mmf.train writes them)")
    src.add_argument("--random-model", metavar="V,D,L", help="a seeded random model of this shape instead")
    p.add_argument("--prompt", default=None, help="prompt text (checkpoint mode; uses its tokenizer)")
    p.add_argument("--prompt-ids", default="1,2,3", help="comma-separated token ids (random-model mode)")
    p.add_argument("--tokens", type=int, default=32, help="tokens to generate (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model")
    p.add_argument("--clock-mhz", type=float, default=60.0, help="core clock (default 60, the d=512 design)")
    p.add_argument("--ddr-bits", type=int, default=8, help="useful bits per DRAM access (8 measured, 512 projected)")
    p.add_argument("--cores", type=int, default=1, help="cores on the board (DDR4 contention)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p.parse_args(argv)


def load(args):
    """(model, encode, decode) from a checkpoint or a random model."""
    if args.checkpoint:
        from mmf.training.checkpoint import load_checkpoint
        ckpt = load_checkpoint(args.checkpoint)
        model = ckpt.build_model()
        tok = ckpt.build_tokenizer()
        return model, tok.encode, tok.decode
    from mmf import MMfreeConfig, MMfreeLM
    try:
        V, D, L = (int(v) for v in args.random_model.split(","))
    except ValueError:
        raise ValueError(f"--random-model wants three ints V,D,L, got {args.random_model!r}") from None
    model = MMfreeLM(MMfreeConfig(vocab_size=V, hidden_size=D, num_layers=L), seed=args.seed)
    return model, None, (lambda ids: " ".join(map(str, ids)))


def main(argv=None):
    """Errors become one-line messages (exit 2 for usage errors, 1 for a failed run); --debug re-raises."""
    from mmf.cli import run
    return run(_main, argv, "python -m fpga_model")


def _main(argv):
    args = parse_args(argv)
    if args.tokens < 0:
        raise ValueError(f"--tokens must be >= 0, got {args.tokens}")
    model, encode, decode = load(args)
    if encode is not None:
        prompt = encode(args.prompt if args.prompt is not None else "\n")
    else:
        try:
            prompt = [int(t) for t in args.prompt_ids.split(",")]
        except ValueError:
            raise ValueError(f"--prompt-ids wants comma-separated ints, got {args.prompt_ids!r}") from None
    if not prompt:
        raise ValueError("the prompt encodes to no tokens; give a non-empty --prompt")
    V = model.config.vocab_size
    if min(prompt) < 0 or max(prompt) >= V:
        raise ValueError(f"--prompt-ids must lie in [0, {V}) for this model, got {prompt}")
    hw = Hardware(clock_mhz=args.clock_mhz, ddr_bits=args.ddr_bits, cores=args.cores)
    acc = Accelerator.from_model(model, hw)
    cfg = model.config
    print(f"model: V={cfg.vocab_size} D={cfg.hidden_size} L={cfg.num_layers} I={cfg.intermediate_size}, "
          f"{model.num_params():,} params; accelerator: {hw.clock_mhz} MHz, {hw.ddr_bits}-bit DRAM accesses, "
          f"{hw.cores} core(s); program {len(acc.compiled.program)} ROM words, DRAM image "
          f"{acc.image.total_bytes:,} bytes")
    fpga_ids, reports = acc.generate(prompt, args.tokens)
    cpu_ids = greedy_cpu(model, prompt, args.tokens)
    n = len(prompt)
    print(f"\nprompt      : {decode(prompt)!r}")
    print(f"accelerator : {decode(fpga_ids[n:])!r}")
    print(f"CPU (int)   : {decode(cpu_ids[n:])!r}")
    same = fpga_ids == cpu_ids
    first_diff = next((i - n for i, (a, b) in enumerate(zip(fpga_ids, cpu_ids)) if a != b), None)
    print(f"same {args.tokens} tokens: {same}" + ("" if same else f" (first difference at new token {first_diff})"))
    diff = np.abs(acc.logits(cpu_ids) - integer_model(model).forward(np.array([cpu_ids]))[0]).max()
    print(f"max |logit difference| over the sequence: {diff:.3g}")
    agree = comparison_passes(same, diff)
    rep = reports[-1]
    watts, note = board_power_w(cfg.hidden_size, hw.cores)
    print(f"\none token: {rep.cycles:,} cycles = {rep.core_ms:.3f} ms on the core + {rep.host_ms:.3f} ms host MMIO"
          f" -> {rep.tokens_per_s:.1f} tokens/s; {rep.energy_j(watts) * 1e3:.2f} mJ/token at {watts} W ({note})")
    print(f"  per layer {rep.block_cycles[0]:,} cycles, LM head {rep.head_cycles:,} cycles")
    bd = rep.breakdown()
    print("  unit        busy cycles  instructions  PC stalled on it")
    for unit in ("tmatmul", "loadstore", "rms", "rowwise"):
        b = bd[unit]
        print(f"  {unit:10s} {b['busy']:12,d} {b['instructions']:13d} {b['stalled_pc']:17,d}")
    print(f"  PC stalls {bd['pc']['stall']:,} cycles; top causes: "
          + ", ".join(f"{k} {v:,}" for k, v in bd["pc"]["causes"].most_common(3)))
    if not np.isfinite(diff):
        print("FAILED: the logits are not finite (NaN/inf): the comparison proves nothing", file=sys.stderr)
    return 0 if agree else 1


def comparison_passes(same_tokens, max_logit_difference):
    """The accelerator agrees with the CPU: the same tokens AND finite logits (NaN == NaN is no match)."""
    return bool(same_tokens) and bool(np.isfinite(max_logit_difference))


if __name__ == "__main__":
    sys.exit(main())
