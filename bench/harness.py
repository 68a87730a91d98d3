"""The benchmark run: start the upstream and nginx once, then per round the mirror and
the reference proxy in turn (A B A B …), each on an empty cache, each through every
workload; nginx runs the warm throughput after them. Optionally a last, unmeasured
pass of the mirror under py-spy. Prints the table and writes it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from bench.loads import (
    MB,
    Shape,
    Target,
    Tools,
    fan_out,
    head_by_tag,
    pulls,
    registry_round,
    warm_throughput,
)
from bench.profiles import PySpy, markdown, summarise
from bench.report import Results, machine, record, table, write_section
from bench.systems import (
    Seeded,
    Upstream,
    start_mirror,
    start_nginx,
    start_reference,
    start_upstream,
)
from tests.e2e.mirrorproc import find_mirror_executable

ROOT = Path(__file__).resolve().parent.parent

_INSTALL = {
    "docker-registry": "apt-get install docker-registry",
    "nginx": "apt-get install nginx",
    "curl": "apt-get install curl",
    "ab": "apt-get install apache2-utils",
    "skopeo": "apt-get install skopeo",
    "py-spy": "pip install py-spy",
}


@dataclass(frozen=True, slots=True)
class Scale:
    """Sizes of the generated images, rounds, and how hard the workloads push."""

    big: int
    layers: list[int]
    rounds: int
    shape: Shape = field(default_factory=Shape)


FULL = Scale(big=300_000_000, layers=[12_000_000] * 5, rounds=3)
SMALL = Scale(big=3_000_000, layers=[200_000] * 5, rounds=2, shape=Shape(head_seconds=2))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark the mirror against the reference registry's proxy and nginx.",
    )
    parser.add_argument("--rounds", type=int, help="repetitions (default 3, with --small 2)")
    parser.add_argument(
        "--small", action="store_true", help="tiny images and a 2 s HEAD run (smoke test)"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help="Markdown file to write"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the rounds, profile a mirror with py-spy into DIR (not measured)",
    )
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker_processes")
    parser.add_argument(
        "--big-mb", type=int, help="size of the big blob in MB (default 300, with --small 3)"
    )
    return parser


def _binaries(profile: bool) -> dict[str, str]:
    wanted = [name for name in _INSTALL if name != "py-spy" or profile]
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin") for name in wanted}
    found["mirror"] = find_mirror_executable()
    missing = [name for name, path in found.items() if path is None]
    if missing:
        hints = "; ".join(_INSTALL.get(name, "pip install -e '.[test]'") for name in missing)
        raise SystemExit(f"bench: missing {', '.join(missing)} ({hints})")
    return {name: path for name, path in found.items() if path is not None}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStacks: every server stops by pid


def _note(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _rounds(
    stack: ExitStack,
    bins: dict[str, str],
    upstream: Upstream,
    scale: Scale,
    rounds: int,
    work: Path,
    nginx_workers: str,
) -> Results:
    """Start nginx, then per round a fresh mirror and a fresh reference proxy through every
    workload, each stopped and its folder removed before the next; then nginx's turn."""
    tools = Tools(bins["curl"], bins["ab"], bins["skopeo"])
    nginx = start_nginx(stack, bins["nginx"], work / "nginx", upstream.seeded, nginx_workers)
    results: Results = {}
    for number in range(1, rounds + 1):
        for system in ("mirror", "reference"):
            scratch = work / f"round-{number}-{system}"
            with ExitStack() as run:
                server = (
                    start_mirror(run, bins["mirror"], scratch / "server", upstream)
                    if system == "mirror"
                    else start_reference(run, bins["docker-registry"], scratch / "server", upstream)
                )
                target = Target(server.url, server.host, server.process.pid)
                record(
                    results, system, registry_round(target, upstream, tools, scale.shape, scratch)
                )
            shutil.rmtree(scratch)
        target = Target(nginx.url, nginx.host, nginx.process.pid)
        record(results, "nginx", warm_throughput(target, upstream, tools, scale.shape))
        _note(f"round {number}/{rounds} done")
    return results


def _profile(bins: dict[str, str], upstream: Upstream, scale: Scale, work: Path, out: Path) -> str:
    """One more mirror on an empty cache, py-spy attached during the cold fan-out (fill
    path), the warm throughput and the HEADs by tag (hit paths), and the pulls between
    them. Returns the Markdown summary; the raw profiles stay in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tools = Tools(bins["curl"], bins["ab"], bins["skopeo"])
    shape, scratch = scale.shape, work / "profile"
    sections: list[str] = []
    with ExitStack() as run:
        mirror = start_mirror(run, bins["mirror"], scratch / "server", upstream)
        target = Target(mirror.url, mirror.host, mirror.process.pid)

        @contextmanager
        def spied(name: str, title: str) -> Iterator[None]:
            path = out / f"{name}.txt"
            with PySpy(bins["py-spy"], target.pid, path):
                yield
            sections.append(markdown(f"{title} (`{path.name}`)", summarise(path)))
            _note(f"profiled {name} into {path}")

        with spied("fill-fanout", f"Fill path: cold fan-out, {shape.fanout_clients} clients"):
            fan_out(target, upstream, tools, shape)
        with spied("hit-warm", f"Hit path: warm throughput, {shape.warm_clients} clients"):
            warm_throughput(target, upstream, tools, shape)
        with spied("pulls", "Cold pull, then warm pull (skopeo)"):
            pulls(target, tools, scratch)
        title = f"Hit path: manifest HEAD by tag, {shape.head_connections} connections"
        with spied("hit-head-by-tag", title):
            head_by_tag(target, upstream, tools, shape, scratch)
    return "\n\n".join(sections)


def _describe(args: argparse.Namespace, rounds: int, scale: Scale, seeded: Seeded) -> str:
    command = f"python bench/run.py --rounds {rounds}" + (" --small" if args.small else "")
    return f"""\
Measured by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.

- {rounds} rounds; each starts the mirror, then the reference proxy, on an empty cache,
  and runs every workload on it; then nginx runs the warm throughput.
- Big blob: one layer of {seeded.big_size / MB:.1f} MB of random bytes.
  Image: {len(scale.layers)} layers, {seeded.image_bytes / MB:.1f} MB.
- nginx: `worker_processes {args.nginx_workers}`.
- A cell is the median over the rounds, the minimum-maximum in brackets; the ratios
  divide the medians.
- The machine is shared: other test runs may have used it at the same time.
"""


def main(argv: list[str]) -> int:
    """Run the benchmark as `argv` asks; returns the exit code. Every process it starts
    is stopped by pid on the way out, also on an error, Ctrl-C or SIGTERM."""
    args = _parser().parse_args(argv)
    scale = SMALL if args.small else FULL
    if args.big_mb:
        scale = replace(scale, big=args.big_mb * 1_000_000)
    rounds = args.rounds or scale.rounds
    bins = _binaries(profile=args.profile is not None)
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as folder, ExitStack() as stack:
        work = Path(folder)
        _note(f"seeding the upstream: {scale.big / MB:.0f} MB layer, {len(scale.layers)} layers")
        upstream = start_upstream(
            stack,
            bins["docker-registry"],
            work / "upstream",
            big_size=scale.big,
            layer_sizes=scale.layers,
        )
        results = _rounds(stack, bins, upstream, scale, rounds, work, args.nginx_workers)
        profile = _profile(bins, upstream, scale, work, args.profile) if args.profile else None
    rendered = table(results)
    print(rendered)
    facts = "\n".join(f"| {name} | {value} |" for name, value in machine(bins, ROOT))
    description = _describe(args, rounds, scale, upstream.seeded)
    body = f"{description}\n| machine | |\n| --- | --- |\n{facts}\n\n{rendered}\n"
    write_section(args.output, "results", body)
    if profile is not None:
        write_section(args.output, "profile", profile)
    _note(f"wrote {args.output}")
    return 0
