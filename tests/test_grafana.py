"""The Grafana dashboard and the Prometheus alerting rules against what the mirror exports.

Every PromQL expression in `grafana/mirror-dashboard.json` and `grafana/alerts.yml` is
tokenized; each metric it selects, each label it matches or groups by and each label
value it asks for must be in a live `/metrics` scrape taken after a pull through the app
(with a miss, a hit, a stale serve and upstream errors, so labelled series exist). The
scrape must also show the hit ratio and byte counts the pull implies. With `promtool`
installed the rules and the dashboard's queries must parse, and each alert must fire in
a unit test exactly when it should.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mirror.config import ManifestSettings, StorageSettings
from tests.conftest import FakeClock
from tests.e2e.support import require_binary
from tests.fakeregistry import FakeRegistry

Client = TestClient[web.Request, web.Application]

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "mirror-dashboard.json"
ALERTS = ROOT / "grafana" / "alerts.yml"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labels Prometheus attaches to every scraped series; the mirror's own text lacks them.
TARGET_LABELS = frozenset({"job", "instance"})

# -- a small PromQL tokenizer ------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[a-zA-Z0-9]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},@])
    """,
    re.VERBOSE,
)
FUNCTIONS = frozenset(
    {
        "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
        "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
        "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
        "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
        "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
        "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
        "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
        "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
        "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
        "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
        "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
        "time", "timestamp", "vector", "year",
    }
)
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
        "topk", "quantile", "limitk", "limit_ratio",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
)


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class Selector:
    """One vector selector: `name{label op "value", ...}`."""

    name: str
    matchers: tuple[Matcher, ...] = ()


@dataclass(slots=True)
class Query:
    """What one PromQL expression reads: its selectors and the labels it groups by."""

    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.selectors}


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pairs, whitespace dropped. Raises ValueError on anything unexpected."""
    out, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot tokenize {expr[position:position + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append((kind, match.group()))
        position = match.end()
    return out


def _unquote(text: str) -> str:
    return text[1:-1] if text[0] == "`" else json.loads('"' + text[1:-1] + '"')


def parse(expr: str) -> Query:
    """The metric names, label matchers and grouping labels of a PromQL expression:
    identifiers that are not functions, aggregations, keywords or label names."""
    toks, query, i = tokens(expr), Query(), 0

    def text(at: int) -> str:
        return toks[at][1] if at < len(toks) else ""

    def matchers(at: int) -> tuple[tuple[Matcher, ...], int]:
        assert text(at) == "{"
        found, at = [], at + 1
        while text(at) != "}":
            label, op, value = toks[at : at + 3]
            assert label[0] == "ident" and op[1] in ("=", "!=", "=~", "!~"), expr
            assert value[0] == "string", expr
            found.append(Matcher(label[1], op[1], _unquote(value[1])))
            at += 3
            if text(at) == ",":
                at += 1
        return tuple(found), at + 1

    while i < len(toks):
        kind, word = toks[i]
        if kind == "op" and word == "{":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        low = word.lower()
        if low in GROUPING:
            i += 1
            if text(i) == "(":
                i += 1
                while text(i) != ")":
                    if toks[i][0] == "ident":
                        query.grouping.add(toks[i][1])
                    i += 1
            continue
        if low in AGGREGATIONS or low in KEYWORDS or (word in FUNCTIONS and text(i + 1) == "("):
            i += 1
            continue
        found: tuple[Matcher, ...] = ()
        i += 1
        if text(i) == "{":
            found, i = matchers(i)
        query.selectors.append(Selector(word, found))
    return query


def test_the_tokenizer_finds_names_labels_and_grouping() -> None:
    query = parse(
        'histogram_quantile(0.95, sum by (upstream, le) (rate(a_bucket{x="1",y=~"5..|e"}[5m])))'
        " / on (job) group_left () max without (z) (b) and c offset 1h > 0.5 * sum(d)"
    )
    assert [s.name for s in query.selectors] == ["a_bucket", "b", "c", "d"]
    assert query.selectors[0].matchers == (Matcher("x", "=", "1"), Matcher("y", "=~", "5..|e"))
    assert query.grouping == {"upstream", "le", "job", "z"}
    with pytest.raises(ValueError):
        parse("rate(x[5m]) # not promql")


# -- the files -----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in document["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> dict[str, str]:
    """`panel title [refId]` → PromQL, for every target of every panel."""
    return {
        f"{panel['title']} [{target['refId']}]": target["expr"]
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    }


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_dashboard_imports_as_is() -> None:
    document = dashboard()
    assert document["title"] == "mirror"
    assert document["uid"] and document["id"] is None
    inputs = {entry["name"]: entry for entry in document["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in document["templating"]["list"]}
    # Provisioned dashboards skip __inputs: the variable resolves ${DS_PROMETHEUS} there.
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(document)]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels(document):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_has_the_panels_operators_need() -> None:
    exprs = dashboard_exprs()
    by_title = {title.rsplit(" [", 1)[0]: expr for title, expr in exprs.items()}
    assert by_title["Hit ratio (requests)"] == (
        'sum(rate(mirror_cache_requests_total{result="hit"}[5m]))'
        " / sum(rate(mirror_cache_requests_total[5m]))"
    )
    assert by_title["Hit ratio (bytes)"] == (
        'sum(rate(mirror_served_bytes_total{source="cache"}[5m]))'
        " / sum(rate(mirror_served_bytes_total[5m]))"
    )
    queries = [parse(expr) for expr in exprs.values()]
    used = set().union(*(q.names for q in queries))
    assert used >= {
        "mirror_cache_requests_total",
        "mirror_served_bytes_total",
        "mirror_upstream_requests_total",
        "mirror_upstream_request_duration_seconds_bucket",
        "mirror_downloads_in_flight",
        "mirror_download_joins_total",
        "mirror_cache_size_bytes",
        "mirror_cache_max_bytes",
        "mirror_evictions_total",
        "mirror_evicted_bytes_total",
        "mirror_digest_mismatches_total",
        "mirror_upstream_ratelimit_remaining",
        "mirror_upstream_ratelimit_limit",
        "process_resident_memory_bytes",
    }
    stale = Matcher("result", "=", "stale")
    assert any(stale in s.matchers for q in queries for s in q.selectors)
    latency = [e for e in exprs.values() if "mirror_upstream_request_duration_seconds" in e]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(e.startswith(f"histogram_quantile({quantile},") for e in latency), quantile
    assert any({"kind", "result"} <= q.grouping for q in queries
               if "mirror_cache_requests_total" in q.names)
    assert any("code" in q.grouping for q in queries
               if "mirror_upstream_requests_total" in q.names)


# -- a live scrape after a pull -------------------------------------------------------------

Series = dict[str, list[tuple[dict[str, str], float]]]
LAYERS = (b"\x1f\x8b first layer " * 20_000, b"\x1f\x8b second layer " * 3_000)
RATELIMIT = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}


@dataclass(frozen=True, slots=True)
class Pulled:
    """What the pull did, as the test counts it, and the scrape taken after it."""

    manifest_bytes: int
    blob_bytes: int
    blobs: int
    upstream_requests: int
    series: Series

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include `labels`."""
        return sum(
            value for have, value in self.series.get(name, [])
            if all(have.get(k) == v for k, v in labels.items())
        )


def parse_scrape(text: str) -> Series:
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return series


async def get_ok(client: Client, path: str) -> bytes:
    async with client.get(path) as response:
        assert response.status == 200, (path, await response.text())
        return await response.read()


@pytest.fixture
async def pulled(mirror_client: Client, fake_registry: FakeRegistry, clock: FakeClock) -> Pulled:
    """An image pulled by tag twice (miss, then hit), its blobs twice, then its tag once
    more after `tag_ttl` while the upstream answers 503 (stale); the first upstream GET of
    a layer answers 503 and is retried. The upstream sends Docker Hub's rate-limit headers."""
    fake_registry.extra_headers.update(RATELIMIT)
    image = fake_registry.add_image("library/app", "1.0", LAYERS)
    blobs = (image.config_digest, *image.layer_digests)
    fake_registry.fail(f"/v2/library/app/blobs/{image.layer_digests[0]}", 503)
    for _ in range(2):
        assert await get_ok(mirror_client, "/v2/library/app/manifests/1.0") == image.manifest
        for digest in blobs:
            assert await get_ok(mirror_client, f"/v2/library/app/blobs/{digest}") == (
                fake_registry.blobs[digest]
            )
    clock.advance(ManifestSettings().tag_ttl + 1)
    fake_registry.fail("/v2/library/app/manifests/1.0", 503, times=2)  # the retry too
    async with mirror_client.get("/v2/library/app/manifests/1.0") as stale:
        assert stale.status == 200
        assert await stale.read() == image.manifest
    upstream_requests = len(fake_registry.requests)
    scrape = (await get_ok(mirror_client, "/metrics")).decode()
    return Pulled(
        manifest_bytes=len(image.manifest),
        blob_bytes=sum(len(fake_registry.blobs[d]) for d in blobs),
        blobs=len(blobs),
        upstream_requests=upstream_requests,
        series=parse_scrape(scrape),
    )


def unknown_in(query: Query, series: Series, allowed: frozenset[str] = frozenset()) -> list[str]:
    """What `query` asks for that no series of the scrape has: metric names, label names,
    label values (target labels excepted)."""
    problems = []
    for selector in query.selectors:
        if selector.name in allowed:
            continue
        samples = [labels for labels, _ in series.get(selector.name, [])]
        if not samples:
            problems.append(f"metric {selector.name}")
            continue
        for m in selector.matchers:
            if m.label in TARGET_LABELS:
                continue
            values = [labels[m.label] for labels in samples if m.label in labels]
            if not values:
                problems.append(f"label {selector.name}{{{m.label}}}")
            elif m.op == "=" and m.value not in values:
                problems.append(f'value {selector.name}{{{m.label}="{m.value}"}}')
            elif m.op == "=~" and not any(re.fullmatch(m.value, v) for v in values):
                problems.append(f'value {selector.name}{{{m.label}=~"{m.value}"}}')
    names = query.names - allowed
    on_series = {label for name in names for labels, _ in series.get(name, []) for label in labels}
    problems += [f"grouping label {label}" for label in query.grouping - on_series - TARGET_LABELS]
    return problems


def test_every_dashboard_query_reads_series_the_mirror_exports(pulled: Pulled) -> None:
    problems = {
        title: unknown
        for title, expr in dashboard_exprs().items()
        if (unknown := unknown_in(parse(expr), pulled.series))
    }
    assert problems == {}, f"not in the scrape: {problems}"


def test_every_exported_mirror_metric_is_on_the_dashboard(pulled: Pulled) -> None:
    used = set().union(*(parse(expr).names for expr in dashboard_exprs().values()))
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in used}
    exported = {
        re.sub(r"_(total|bucket|count|sum|created)$", "", name)
        for name in pulled.series
        if name.startswith("mirror_")
    }
    assert exported - families == set()


def ratio(expr: str, pulled: Pulled) -> float:
    """A dashboard ratio `sum(rate(A[5m])) / sum(rate(B[5m]))` over counters since start:
    the rates share their window, so their ratio is that of the counters' sums."""
    assert re.fullmatch(r"sum\(rate\([^()]+\)\) / sum\(rate\([^()]+\)\)", expr), expr
    numerator, denominator = parse(expr).selectors
    sums = [
        pulled.total(s.name, **{m.label: m.value for m in s.matchers if m.op == "="})
        for s in (numerator, denominator)
    ]
    return sums[0] / sums[1]


def test_the_scrape_shows_what_the_pull_did(pulled: Pulled) -> None:
    requests, served = "mirror_cache_requests_total", "mirror_served_bytes_total"
    # Manifest: miss, hit, stale. Blobs: a miss each, then a hit each.
    assert pulled.total(requests, kind="manifest", result="miss") == 1
    assert pulled.total(requests, kind="manifest", result="hit") == 1
    assert pulled.total(requests, kind="manifest", result="stale") == 1
    assert pulled.total(requests, kind="blob", result="miss") == pulled.blobs
    assert pulled.total(requests, kind="blob", result="hit") == pulled.blobs
    hits, all_requests = 1 + pulled.blobs, 3 + 2 * pulled.blobs
    exprs = {title.rsplit(" [", 1)[0]: e for title, e in dashboard_exprs().items()}
    assert ratio(exprs["Hit ratio (requests)"], pulled) == pytest.approx(hits / all_requests)
    # The repeat pulls and the stale manifest came from the cache, the first from upstream.
    from_cache = 2 * pulled.manifest_bytes + pulled.blob_bytes
    from_upstream = pulled.manifest_bytes + pulled.blob_bytes
    assert pulled.total(served, source="cache") == from_cache
    assert pulled.total(served, source="upstream") == from_upstream
    assert ratio(exprs["Hit ratio (bytes)"], pulled) == pytest.approx(
        from_cache / (from_cache + from_upstream)
    )
    assert pulled.total("mirror_upstream_bytes_total", upstream="docker.io") == from_upstream
    # Every request the upstream received is counted once, each 503 among them.
    assert pulled.total("mirror_upstream_requests_total") == pulled.upstream_requests
    assert pulled.total("mirror_upstream_requests_total", code="503", kind="blob") == 1
    assert pulled.total("mirror_upstream_requests_total", code="503", kind="manifest") == 2
    assert pulled.total("mirror_upstream_request_duration_seconds_count") == (
        pulled.upstream_requests
    )
    assert pulled.total("mirror_upstream_ratelimit_limit", upstream="docker.io") == 100
    assert pulled.total("mirror_upstream_ratelimit_remaining", upstream="docker.io") == 76
    assert pulled.total("mirror_request_duration_seconds_count", kind="manifest") == 3
    assert pulled.total("mirror_request_duration_seconds_count", kind="blob") == 2 * pulled.blobs
    assert pulled.total("mirror_cache_size_bytes") == pulled.manifest_bytes + pulled.blob_bytes
    assert pulled.total("mirror_cache_blobs") == pulled.blobs + 1
    assert pulled.total("mirror_cache_max_bytes") == StorageSettings().max_size
    assert pulled.total("mirror_downloads_in_flight") == 0
    assert pulled.total("mirror_download_joins_total") == 0
    assert pulled.total("mirror_digest_mismatches_total") == 0
    assert pulled.total("process_resident_memory_bytes") > 0


# -- alerting rules --------------------------------------------------------------------------

SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"(\d+(ms|[smhdwy]))+")


def test_the_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {"MirrorDown", "MirrorUpstreamErrorRateHigh", "MirrorCacheThrashing",
            "MirrorHitRatioCollapse"} <= set(names)
    for rule in rules:
        assert DURATION.fullmatch(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        parse(rule["expr"])
    down = next(rule for rule in rules if rule["alert"] == "MirrorDown")
    assert parse(down["expr"]).names == {"up"} and "== 0" in down["expr"]


def test_every_alert_reads_series_the_mirror_exports(pulled: Pulled) -> None:
    problems = {
        rule["alert"]: unknown
        for rule in alert_rules()
        if (unknown := unknown_in(parse(rule["expr"]), pulled.series, frozenset({"up"})))
    }
    assert problems == {}, f"not in the scrape: {problems}"


def test_promtool_accepts_the_rules() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    exprs = list(dashboard_exprs().values())
    rules = [{"record": f"dashboard:query_{n}", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


A, B, C = 'job="mirror", instance="a:5000"', 'job="mirror", instance="b:5000"', (
    'job="mirror", instance="c:5000"')


# For each alert: input series where instance a must fire and the others must not.
ALERT_CASES: dict[str, dict[str, Any]] = {
    "MirrorDown": {
        "series": {f"up{{{A}}}": "1 1 0x10", f"up{{{B}}}": "1x12"},
        "quiet": "3m",  # down for 1 minute: still pending
        "fires": "5m",
        "labels": {"severity": "critical"},
    },
    "MirrorUpstreamErrorRateHigh": {
        "series": {
            f'mirror_upstream_requests_total{{{A}, upstream="docker.io", kind="blob", '
            'code="200"}': "0+60x30",
            f'mirror_upstream_requests_total{{{A}, upstream="docker.io", kind="blob", '
            'code="503"}': "0+30x30",
            f'mirror_upstream_requests_total{{{A}, upstream="ghcr.io", kind="blob", '
            'code="200"}': "0+60x30",
            f'mirror_upstream_requests_total{{{A}, upstream="ghcr.io", kind="blob", '
            'code="error"}': "0+1x30",
        },
        "quiet": "5m",
        "fires": "20m",
        "labels": {"severity": "warning", "upstream": "docker.io"},
    },
    "MirrorCacheThrashing": {
        "series": {
            f"mirror_cache_size_bytes{{{A}}}": "900x120",
            f"mirror_cache_max_bytes{{{A}}}": "1000x120",
            f"mirror_evicted_bytes_total{{{A}}}": "0+10x120",  # 600 bytes an hour
            f"mirror_cache_size_bytes{{{B}}}": "900x120",
            f"mirror_cache_max_bytes{{{B}}}": "1000x120",
            f"mirror_evicted_bytes_total{{{B}}}": "0+1x120",
            f"mirror_cache_size_bytes{{{C}}}": "500x120",  # not full
            f"mirror_cache_max_bytes{{{C}}}": "1000x120",
            f"mirror_evicted_bytes_total{{{C}}}": "0+10x120",
        },
        "quiet": "60m",
        "fires": "100m",
        "labels": {"severity": "warning"},
    },
    "MirrorHitRatioCollapse": {
        "series": {
            # 90% hits for 23 hours, then 10%; b stays at 90%; c collapses on tiny traffic.
            f'mirror_cache_requests_total{{{A}, kind="blob", result="hit"}}':
                "0+54x1380 74526+6x119",
            f'mirror_cache_requests_total{{{A}, kind="blob", result="miss"}}':
                "0+6x1380 8334+54x119",
            f'mirror_cache_requests_total{{{B}, kind="blob", result="hit"}}': "0+54x1500",
            f'mirror_cache_requests_total{{{B}, kind="blob", result="miss"}}': "0+6x1500",
            f'mirror_cache_requests_total{{{C}, kind="blob", result="hit"}}':
                "0+0.9x1380 1242.1+0.1x119",
            f'mirror_cache_requests_total{{{C}, kind="blob", result="miss"}}':
                "0+0.1x1380 138.9+0.9x119",
        },
        "quiet": "1380m",
        "fires": "1500m",
        "labels": {"severity": "warning"},
    },
    "MirrorUpstreamRateLimitLow": {
        "series": {
            f'mirror_upstream_ratelimit_remaining{{{A}, upstream="docker.io"}}': "5x40",
            f'mirror_upstream_ratelimit_limit{{{A}, upstream="docker.io"}}': "100x40",
            f'mirror_upstream_requests_total{{{A}, upstream="docker.io", kind="manifest", '
            'code="200"}': "0+1x40",
            # b: as low, but the last answer is old (no upstream traffic for 30 minutes).
            f'mirror_upstream_ratelimit_remaining{{{B}, upstream="docker.io"}}': "5x40",
            f'mirror_upstream_ratelimit_limit{{{B}, upstream="docker.io"}}': "100x40",
            f'mirror_upstream_requests_total{{{B}, upstream="docker.io", kind="manifest", '
            'code="200"}': "10x40",
            f'mirror_upstream_ratelimit_remaining{{{C}, upstream="docker.io"}}': "50x40",
            f'mirror_upstream_ratelimit_limit{{{C}, upstream="docker.io"}}': "100x40",
            f'mirror_upstream_requests_total{{{C}, upstream="docker.io", kind="manifest", '
            'code="200"}': "0+1x40",
        },
        "quiet": "3m",
        "fires": "20m",
        "labels": {"severity": "warning", "upstream": "docker.io"},
    },
    "MirrorDigestMismatch": {
        "series": {
            f"mirror_digest_mismatches_total{{{A}}}": "0 0 0 1x10",
            f"mirror_digest_mismatches_total{{{B}}}": "0x13",
        },
        "quiet": "3m",
        "fires": "6m",
        "labels": {"severity": "warning"},
    },
}


def test_each_alert_fires_exactly_when_it_should(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    assert set(ALERT_CASES) == {rule["alert"] for rule in alert_rules()}, (
        "every alert needs a case in ALERT_CASES")
    # promtool compares annotations too; their templates are checked by `check rules`.
    document = yaml.safe_load(ALERTS.read_text())
    stripped = copy.deepcopy(document)
    for group in stripped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(stripped))
    tests = []
    for alert, case in ALERT_CASES.items():
        tests.append({
            "name": alert,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case["series"].items()],
            "alert_rule_test": [
                {"eval_time": case["quiet"], "alertname": alert, "exp_alerts": []},
                {"eval_time": case["fires"], "alertname": alert,
                 "exp_alerts": [{"exp_labels": {"job": "mirror", "instance": "a:5000",
                                                **case["labels"]}}]},
            ],
        })
    unit = tmp_path / "alerts-test.yml"
    unit.write_text(yaml.safe_dump(
        {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", str(unit)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
