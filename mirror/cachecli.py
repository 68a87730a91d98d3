"""`mirror cache stats|ls|prune|verify`: the storage folder of a stopped or running mirror.

Safe beside a running mirror: the index is SQLite (diskcache) shared across processes,
and a blob deleted here keeps its bytes for readers that have it open; the mirror
fetches again whatever goes missing. Gathers values for `mirror.cachereport` to render;
eviction policy stays in `mirror.evict`. Exit codes: 0 success, 1 `verify` found (and
removed) corrupt blobs, 2 bad usage or configuration, or no cache at the storage path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mirror import cachereport as report
from mirror.cliconfig import settings_or_report
from mirror.config import Overrides, Settings
from mirror.evict import choose_victims, older_than, remove
from mirror.index import BlobIndex, Entry
from mirror.pins import parse_pin, pinned_digests
from mirror.refs import Refs
from mirror.routing import Target, client_name
from mirror.storage.disk import DiskBlobStore
from mirror.units import parse_duration, parse_size

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
CHUNK = 1024 * 1024


def add_cache_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `cache` and its subcommands on the `mirror` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", metavar="FILE", type=Path, help="YAML config file (env MIRROR_CONFIG)"
    )
    common.add_argument(
        "--storage", metavar="PATH", help="cache directory (env MIRROR_STORAGE_PATH)"
    )
    common.add_argument("--max-size", metavar="SIZE", help="cache quota (env MIRROR_MAX_SIZE)")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    cache = commands.add_parser("cache", help="inspect and tidy a mirror's storage folder")
    cache.set_defaults(run=partial(_usage, cache))
    sub = cache.add_subparsers(dest="cache_command", metavar="COMMAND")
    parsers = {
        name: sub.add_parser(name, parents=[common], help=text)
        for name, text in (
            ("stats", "size, quota, counts, pins, hit ratio"),
            ("ls", "repositories and tags held, sizes, last pull"),
            ("prune", "remove unpinned content by age or down to a size"),
            ("verify", "re-hash every blob; remove and report corrupt ones"),
        )
    }
    for name, run in (("stats", _stats), ("ls", _ls), ("prune", _prune), ("verify", _verify)):
        parsers[name].set_defaults(run=run)
    parsers["prune"].add_argument(
        "--to",
        metavar="SIZE",
        type=_argument(parse_size),
        help="evict least recently used content until the cache holds at most SIZE",
    )
    parsers["prune"].add_argument(
        "--older-than",
        metavar="DURATION",
        type=_argument(parse_duration),
        help="remove what was last used longer than DURATION ago, e.g. 30d",
    )


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


@dataclass(frozen=True, slots=True)
class _Cache:
    settings: Settings
    store: DiskBlobStore
    index: BlobIndex
    refs: Refs

    def pinned(self) -> set[str]:
        pins = [parse_pin(text, self.settings.upstreams) for text in self.settings.storage.pinned]
        return pinned_digests(pins, self.refs, self.store)


@contextmanager
def _opened(args: argparse.Namespace, nothing_to: str) -> Iterator[_Cache | None]:
    """The cache the flags, environment and config name; None once the reason is printed."""
    settings = settings_or_report(
        args.config, Overrides(storage=args.storage, max_size=args.max_size)
    )
    if settings is None:
        yield None
        return
    root = settings.storage.path
    # Only a folder a mirror has used: never lay out an empty cache in a mistyped path.
    if not (root / "index").is_dir() and not (root / "blobs").is_dir():
        print(
            f"mirror: no cache at {root} (storage.path); nothing to {nothing_to}", file=sys.stderr
        )
        yield None
        return
    index = BlobIndex(root)
    try:
        yield _Cache(settings, DiskBlobStore(root), index, Refs(root))
    finally:
        index.close()


def _emit(args: argparse.Namespace, text: str, document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n" if args.json else text)


def _stats(args: argparse.Namespace) -> int:
    with _opened(args, "show") as cache:
        if cache is None:
            return EXIT_USAGE
        storage = cache.settings.storage
        entries = list(cache.index.entries())
        pinned = cache.pinned()
        manifests = sum(1 for e in entries if e.kind == "manifest")
        stats = report.Stats(
            storage=str(storage.path.resolve()),
            size=cache.index.total(),
            max_size=storage.max_size,
            high_watermark=storage.high_watermark,
            low_watermark=storage.low_watermark,
            blobs=len(entries) - manifests,
            manifests=manifests,
            pinned_references=len(storage.pinned),
            pinned_bytes=sum(e.size for e in entries if e.digest in pinned),
            running=_running(cache.index.status()),
        )
    now = time.time()
    _emit(args, report.stats_text(stats, now), report.stats_json(stats, now))
    return EXIT_OK


def _running(status: dict[str, object] | None) -> report.Running | None:
    """The status a mirror published, if its process is still alive."""
    if not status:
        return None
    pid, started = status.get("pid"), status.get("started")
    hits, misses = status.get("hits"), status.get("misses")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, but another user's
    except OSError:
        return None

    def number(value: object) -> float:
        return float(value) if isinstance(value, int | float) else 0.0

    return report.Running(pid, number(started), int(number(hits)), int(number(misses)))


def _ls(args: argparse.Namespace) -> int:
    with _opened(args, "list") as cache:
        if cache is None:
            return EXIT_USAGE
        held: dict[str, list[Entry]] = {}
        for entry in cache.index.entries():
            for repo in entry.repos:
                held.setdefault(repo, []).append(entry)
        settings = cache.settings
        rows = []
        for upstream in settings.upstreams:
            for repo in cache.refs.repositories(upstream):
                entries = held.get(f"{upstream}/{repo}", [])
                rows.append(
                    report.Repository(
                        name=client_name(
                            settings.upstreams, settings.default_upstream, Target(upstream, repo)
                        ),
                        upstream=upstream,
                        repository=repo,
                        tags=tuple(cache.refs.tags(upstream, repo)),
                        size=sum(e.size for e in entries),
                        entries=len(entries),
                        last_pull=max((e.last_access for e in entries), default=None),
                    )
                )
    rows.sort(key=lambda row: row.name)
    _emit(args, report.ls_text(rows), report.ls_json(rows))
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    target: int | None = args.to
    age: float | None = args.older_than
    if target is None and age is None:
        print("mirror cache prune: give --to SIZE, --older-than DURATION or both", file=sys.stderr)
        return EXIT_USAGE
    with _opened(args, "prune") as cache:
        if cache is None:
            return EXIT_USAGE
        entries = list(cache.index.entries())
        keep = cache.pinned()
        victims: list[Entry] = [] if age is None else older_than(entries, keep, time.time() - age)
        if target is not None:
            chosen = {v.digest for v in victims}
            rest = [e for e in entries if e.digest not in chosen]
            excess = sum(e.size for e in rest) - target
            victims += choose_victims(rest, keep, excess)
        evicted = remove(cache.index, cache.store, victims)
        pruned = report.Pruned(
            count=evicted.count,
            freed=evicted.bytes,
            digests=tuple(v.digest for v in victims),
            size=cache.index.total(),
            target=target,
            older_than=age,
            pinned_bytes=sum(e.size for e in entries if e.digest in keep),
        )
    _emit(args, report.prune_text(pruned), report.prune_json(pruned))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    with _opened(args, "verify") as cache:
        if cache is None:
            return EXIT_USAGE
        reconciled = cache.index.reconcile(cache.store)
        sizes = {d: stat[0] for d in cache.store.digests() if (stat := cache.store.stat(d))}
        progress = report.Progress(sys.stderr, sum(sizes.values()), "verifying")
        corrupt: list[report.Corrupt] = []
        checked = checked_bytes = 0
        for digest, size in sizes.items():
            actual = _hash(cache.store, digest, progress.advance)
            if actual is None:  # evicted by a running mirror meanwhile
                progress.advance(size)
                continue
            checked, checked_bytes = checked + 1, checked_bytes + size
            if actual != digest:
                cache.store.delete(digest)
                cache.index.remove(digest)
                corrupt.append(report.Corrupt(digest, size, actual))
        progress.finish()
    verified = report.Verified(
        reconciled.indexed, reconciled.dropped, checked, checked_bytes, tuple(corrupt)
    )
    _emit(args, report.verify_text(verified), report.verify_json(verified))
    return EXIT_CORRUPT if corrupt else EXIT_OK


def _hash(store: DiskBlobStore, digest: str, advance: Callable[[int], None]) -> str | None:
    """The sha256 digest of a blob's bytes, read in 1 MiB chunks; None if it is gone."""
    blob = store.open(digest)
    if blob is None:
        return None
    sha = hashlib.sha256()
    with blob:
        while chunk := blob.read(CHUNK):
            sha.update(chunk)
            advance(len(chunk))
    return "sha256:" + sha.hexdigest()
