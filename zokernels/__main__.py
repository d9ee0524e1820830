"""python -m zokernels bench [args]: the microbenchmarks (bench/ of a source checkout) on this machine's device."""
import os
import runpy
import sys


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "bench":
        print("usage: python -m zokernels bench [--out PATH] [--ks 1,4,16,64] [--backend NAME] [--quick]")
        return 2
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench_perturb.py")
    if not os.path.exists(script):
        print(f"no {script}: the benchmarks ship with the source checkout (pip install -e .)", file=sys.stderr)
        return 2
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
