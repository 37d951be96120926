"""The propagation audit: does a bias of the raters reach the reward model and the policy?

For each attribute (length, politeness, hedging, refusal, formatting, any personality scorer)
one number per stage of a run, each with a 95 % confidence interval:

1. **raters**: the bias profile (:mod:`rlhfkit.raters.bias`) of the preference data the reward
   model was trained on, found through the runs' ``provenance.json`` inputs. Log-odds of
   choosing a response per unit of attribute difference.
2. **reward model**: its preference on a fixed probe set of response pairs that differ in one
   attribute (``configs/probes/default.yaml``: the same answer padded with neutral sentences,
   a polite or hedged opener in place of a neutral one of equal length, a refusal, a bulleted
   list). A Bradley-Terry reward difference is a log-odds, so regressing the raw score
   differences on the attribute differences (all attributes together, no intercept,
   heteroskedasticity-robust errors) gives a coefficient in the same units as stage 1.
3. **policy**: the shift of the policy's replies from the reference (SFT) policy's replies on
   held-out prompts, in attribute units (for length, mean ``log(1 + words)``; mean words are
   reported too). Both policies sample with the same seed per prompt; the interval is a paired
   t-interval over prompts.

``length`` is ``log(1 + words)`` at every stage (as in bias profiles); other attributes are the
scorers of :mod:`rlhfkit.personality.scorers` (0..1).

Example::

    >>> report = audit_propagation(["runs/ppo-long"], out="runs/audit")  # doctest: +SKIP
    >>> report["runs"][0]["stages"]["reward_model"]["length"]["estimate"]  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from rlhfkit.errors import InputError
from rlhfkit.raters.bias import bias_profile, log_words, personality_scorers
from rlhfkit.raters.personas import attribute_names, attribute_values

DEFAULT_ATTRIBUTES = ("length", "politeness", "hedging", "refusal", "formatting")
PROBES_FILE = Path(__file__).resolve().parents[3] / "configs" / "probes" / "default.yaml"
STAGES = ("raters", "reward_model", "policy")
UNITS = {
    "raters": "log-odds of choosing a response per unit of attribute difference",
    "reward_model": "reward difference (log-odds) per unit of attribute difference on probes",
    "policy": "mean attribute of the policy's replies minus the reference policy's",
}


@dataclass
class Estimate:
    """One stage's number for one attribute, with its 95 % interval (None: not estimable)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    note: str = ""

    @property
    def significant(self) -> bool:
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def _estimate(value: float, se: float, n: int, crit: float, note: str = "") -> Estimate:
    if not (math.isfinite(value) and math.isfinite(se)):
        return Estimate(None, None, None, n, note or "not estimable")
    return Estimate(float(value), float(value - crit * se), float(value + crit * se), n, note)


# --- lineage ------------------------------------------------------------------------------------


@dataclass
class Lineage:
    """What a run was built from, read from ``provenance.json`` and ``config.yaml``."""

    run: Path
    kind: str
    preference_data: Path | None = None
    data_format: str | None = None
    reward_model: Path | None = None
    policy: Path | None = None
    reference: str | None = None
    eval_prompts: str | None = None
    temperature: float = 0.7
    max_new_tokens: int = 64
    warnings: list[str] = field(default_factory=list)


def _read_run(run: Path) -> tuple[dict, dict]:
    prov_path = run / "provenance.json"
    if not prov_path.is_file():
        raise InputError(f"{run}: no provenance.json; expected a run directory written by rlhfkit")
    try:
        prov = json.loads(prov_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{prov_path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(prov, dict) or not isinstance(prov.get("inputs"), dict):
        raise InputError(f"{prov_path}: expected an object with kind and inputs")
    cfg = {}
    if (run / "config.yaml").is_file():
        try:
            cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise InputError(f"{run / 'config.yaml'}: not valid YAML") from None
    return prov, cfg if isinstance(cfg, dict) else {}


def _input_ref(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    return entry.get("path") or entry.get("name")


def trace_run(run: str | Path) -> Lineage:
    """Follow a run's provenance back to its reward model and preference data.

    A reward run gives stages 1-2; a policy run (PPO, RLOO, best-of-n with ``reward``; DPO/KTO
    with ``data``) adds stage 3, its reference being the policy it started from.
    """
    run = Path(run)
    prov, cfg = _read_run(run)
    inputs = prov["inputs"]
    kind = str(prov.get("kind", "?"))
    lineage = Lineage(run=run, kind=kind)
    if kind == "reward":
        reward_run = run
        lineage.reward_model = run / "model"
    else:
        lineage.policy = run / "model"
        lineage.reference = _input_ref(inputs.get("policy") or inputs.get("model"))
        lineage.eval_prompts = cfg.get("eval_prompts")
        lineage.temperature = float(cfg.get("temperature", 0.7) or 0.7)
        lineage.max_new_tokens = int(cfg.get("max_new_tokens", 64) or 64)
        reward = inputs.get("reward")
        reward_run = None
        if isinstance(reward, dict):
            lineage.reward_model = Path(_input_ref(reward) or "")
            parent = reward.get("parent_run")
            reward_run = Path(parent) if parent else None
            if reward_run is None:
                lineage.warnings.append(f"{run}: reward input is not a run; no rater stage")
        elif isinstance(inputs.get("data"), dict):
            # DPO/KTO learn from the preferences directly: no reward model stage.
            _data_from(lineage, inputs["data"], cfg)
    if reward_run is not None:
        r_prov, r_cfg = _read_run(reward_run)
        if isinstance(r_prov["inputs"].get("data"), dict):
            _data_from(lineage, r_prov["inputs"]["data"], r_cfg)
    return lineage


def _data_from(lineage: Lineage, entry: dict, cfg: dict) -> None:
    path = entry.get("path")
    if not path:
        lineage.warnings.append("the preference data is not a file; no rater stage")
        return
    lineage.preference_data = Path(path)
    lineage.data_format = cfg.get("format")
    if not lineage.preference_data.is_file():
        lineage.warnings.append(f"{path}: preference data no longer exists; no rater stage")
        lineage.preference_data = None
        return
    if entry.get("sha256"):
        from rlhfkit.train.run import file_sha256

        if file_sha256(lineage.preference_data) != entry["sha256"]:
            lineage.warnings.append(f"{path}: changed since training (sha256 differs)")


# --- stage 1: raters ----------------------------------------------------------------------------


def rater_stage(pairs: Sequence[Any], attributes: Sequence[str]) -> dict[str, Estimate]:
    """The bias profile coefficients of ``pairs`` (PreferencePair) for ``attributes``."""
    scorers = personality_scorers([a for a in attributes if a != "length"])
    base = {"length": log_words} if "length" in attributes else {}
    profile = bias_profile(list(pairs), base, scorers)
    out = {}
    for a in attributes:
        c = profile.coefficients.get(a)
        if c is None or not math.isfinite(c.estimate):
            out[a] = Estimate(None, None, None, profile.n_judgments, "not estimable")
        else:
            out[a] = Estimate(c.estimate, c.ci_low, c.ci_high, profile.n_judgments)
    return out


# --- stage 2: reward model on probes ------------------------------------------------------------


@dataclass
class Probe:
    prompt: str
    variant: str
    base: str
    kind: str
    """Which attribute the pair was built to differ in."""


def build_probes(path: str | Path | None = None) -> list[Probe]:
    """The probe pairs of a probe file (default ``configs/probes/default.yaml``), built
    deterministically: see that file for the rules.

    Example::

        >>> probes = build_probes()
        >>> sorted({p.kind for p in probes})
        ['formatting', 'hedging', 'length', 'politeness', 'refusal']
    """
    path = Path(path) if path else PROBES_FILE
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such probe file") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        raise InputError(f"{path}: not valid YAML; expected a probe set mapping") from None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: expected a mapping with items, padding, politeness, ...")
    items = _list(spec, "items", path)
    padding = [str(s) for s in _list(spec, "padding", path)]
    polite = _phrase_pairs(spec, "politeness", path)
    hedges = _phrase_pairs(spec, "hedging", path)
    refusals = [str(s) for s in _list(spec, "refusals", path)]
    probes = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("prompt") or not item.get("answer"):
            raise InputError(f"{path}: items[{i}]: expected prompt and answer")
        prompt, answer = str(item["prompt"]), str(item["answer"]).strip()
        sentences = [s.strip() for s in answer.replace("? ", "?|").replace(". ", ".|").split("|")]
        for n in (1, 2, 4):
            extra = [padding[(i + j) % len(padding)] for j in range(n)]
            probes.append(Probe(prompt, " ".join([answer, *extra]), answer, "length"))
        pol, neutral = polite[i % len(polite)]
        probes.append(Probe(prompt, f"{pol} {answer}", f"{neutral} {answer}", "politeness"))
        pol, neutral = polite[(i + 1) % len(polite)]
        probes.append(Probe(prompt, f"{answer} {pol}", f"{answer} {neutral}", "politeness"))
        hedge, neutral = hedges[i % len(hedges)]
        probes.append(Probe(prompt, f"{hedge} {answer}", f"{neutral} {answer}", "hedging"))
        refusal = refusals[i % len(refusals)]
        probes.append(Probe(prompt, f"{refusal} {sentences[0]}", answer, "refusal"))
        if len(sentences) > 1:
            listed = "\n".join(f"- {s}" for s in sentences)
            probes.append(Probe(prompt, listed, answer, "formatting"))
    return probes


def _list(spec: dict, key: str, path: Path) -> list:
    value = spec.get(key)
    if not isinstance(value, list) or not value:
        raise InputError(f"{path}: {key}: expected a non-empty list")
    return value


def _phrase_pairs(spec: dict, key: str, path: Path) -> list[tuple[str, str]]:
    pairs = _list(spec, key, path)
    for i, p in enumerate(pairs):
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise InputError(f"{path}: {key}[{i}]: expected [variant phrase, neutral phrase]")
    return [(a, b) for a, b in pairs]


def probe_regression(
    differences: dict[str, np.ndarray], reward_diff: np.ndarray, attributes: Sequence[str]
) -> dict[str, Estimate]:
    """OLS of reward differences on attribute differences, no intercept, HC1 robust errors.

    Attributes without variation on the probes are reported as not estimable.
    """
    names = [a for a in differences if np.any(differences[a] != 0)]
    x = (
        np.column_stack([differences[a] for a in names])
        if names
        else np.zeros((len(reward_diff), 0))
    )
    n, k = x.shape
    out = {a: Estimate(None, None, None, n, "no variation on the probes") for a in attributes}
    if k == 0 or n <= k:
        return out
    xtx_inv = np.linalg.pinv(x.T @ x)
    beta = xtx_inv @ x.T @ reward_diff  # (k,)
    resid = reward_diff - x @ beta
    meat = (x * (resid**2)[:, None]).T @ x
    cov = xtx_inv @ meat @ xtx_inv * n / (n - k)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    crit = float(stats.t.ppf(0.975, n - k))
    for j, a in enumerate(names):
        if a in out:
            out[a] = _estimate(float(beta[j]), float(se[j]), n, crit)
    return out


def reward_stage(
    model_dir: str | Path,
    probes: Sequence[Probe],
    attributes: Sequence[str],
    max_length: int = 512,
    batch_size: int = 16,
) -> dict[str, Estimate]:
    """The reward model's coefficients on the probe pairs (raw scores of head 0)."""
    scores = _reward_scores(model_dir, probes, max_length, batch_size)
    variant, base = scores[0::2], scores[1::2]
    controls = list(dict.fromkeys([*attributes, *(p.kind for p in probes)]))
    vals = attribute_values(controls, [t for p in probes for t in (p.variant, p.base)])
    differences = {a: v[0::2] - v[1::2] for a, v in vals.items()}
    return probe_regression(differences, variant - base, attributes)


def _reward_scores(model_dir, probes, max_length: int, batch_size: int) -> np.ndarray:
    import torch

    from rlhfkit.models.chat import encode_prompt, encode_response, right_pad
    from rlhfkit.models.heads import RewardModel, load_reward_model

    rm = load_reward_model(model_dir)
    scorer, tok = RewardModel(rm.model).eval(), rm.tokenizer
    seqs = []
    for p in probes:
        prompt = encode_prompt(tok, [{"role": "user", "content": p.prompt}])
        for text in (p.variant, p.base):
            resp = encode_response(tok, text)[: max_length - 1]
            seqs.append(
                (prompt[-(max_length - len(resp)) :] if max_length > len(resp) else []) + resp
            )
    out = []
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            ids, mask = right_pad(seqs[start : start + batch_size], tok.pad_token_id)
            out.append(scorer(ids, mask)[:, 0].double().numpy())  # (batch,) head 0, raw
    return np.concatenate(out)


# --- stage 3: policy ----------------------------------------------------------------------------


def sample_replies(
    model: str | Path,
    prompts: list[list[dict]],
    samples: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[list[str]]:
    """``samples`` replies per prompt; sample j of prompt i uses seed ``seed + j`` for the whole
    batch, so two policies meet the same random numbers (paired comparison)."""
    from rlhfkit.models import generate_replies, load_policy

    policy = load_policy(model)
    per_sample = [
        generate_replies(
            policy,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed + j,
            progress=len(prompts) > 32,
        )
        for j in range(samples)
    ]
    return [[per_sample[j][i] for j in range(samples)] for i in range(len(prompts))]


def policy_shift(
    policy_replies: list[list[str]], reference_replies: list[list[str]], attributes: Sequence[str]
) -> tuple[dict[str, Estimate], dict[str, Any]]:
    """Paired shift per attribute (policy minus reference, mean over samples per prompt) with a
    t-interval over prompts; plus means and mean word counts of both."""
    n = len(policy_replies)
    flat_p = [t for r in policy_replies for t in r]
    flat_r = [t for r in reference_replies for t in r]
    vp = attribute_values(attributes, flat_p)
    vr = attribute_values(attributes, flat_r)
    out, means = {}, {}
    crit = float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.nan
    for a in attributes:
        diff = vp[a].reshape(n, -1).mean(axis=1) - vr[a].reshape(n, -1).mean(axis=1)  # (prompts,)
        se = diff.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        out[a] = _estimate(float(diff.mean()), float(se), n, crit)
        means[a] = {"policy": float(vp[a].mean()), "reference": float(vr[a].mean())}
    words = {
        "policy": float(np.mean([len(t.split()) for t in flat_p])),
        "reference": float(np.mean([len(t.split()) for t in flat_r])),
    }
    return out, {"means": means, "words": words}


# --- the audit ----------------------------------------------------------------------------------


def audit_propagation(
    runs: Sequence[str | Path],
    *,
    prompts: str | None = None,
    probes: str | Path | None = None,
    attributes: Sequence[str] | None = None,
    n_prompts: int = 64,
    samples: int = 2,
    max_new_tokens: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """``rlhfkit audit propagation``: each attribute's coefficient at each stage of each run.

    With ``out`` the report is also written there as ``propagation.json``,
    ``propagation.txt`` and one ``propagation-<attribute>.png`` per attribute.

    Example::

        report = audit_propagation(["runs/ppo-balanced", "runs/ppo-long"],
                                   prompts="heldout.jsonl", attributes=["length"], out="audit")
    """
    from rlhfkit.data import read_preferences

    attributes = list(attributes or DEFAULT_ATTRIBUTES)
    known = attribute_names()
    for a in attributes:
        if a not in known:
            raise InputError(f"--attribute {a!r}: expected one of {', '.join(known)}")
    if not runs:
        raise InputError("audit propagation: expected at least one run directory")
    if n_prompts < 2 or samples < 1:
        raise InputError("--n-prompts must be >= 2 and --samples >= 1")
    probe_set = build_probes(probes)
    reference_cache: dict[tuple, list[list[str]]] = {}
    sampled: list[tuple[tuple, list[list[str]]] | None] = []  # per run: (key, its replies)
    report_runs = []
    for run in runs:
        lineage = trace_run(run)
        stages: dict[str, dict[str, Any]] = {}
        extra: dict[str, Any] = {}
        sampled.append(None)
        if lineage.preference_data is not None:
            pairs = read_preferences(lineage.preference_data, lineage.data_format)
            stages["raters"] = rater_stage(pairs, attributes)
        if lineage.reward_model is not None:
            stages["reward_model"] = reward_stage(lineage.reward_model, probe_set, attributes)
        if lineage.policy is not None and lineage.reference:
            source = prompts or lineage.eval_prompts
            if not source:
                raise InputError(
                    f"{lineage.run}: the run names no held-out prompts (eval_prompts); pass --prompts"
                )
            from rlhfkit.train.base import read_prompts

            held = read_prompts(str(source))[:n_prompts]
            if len(held) < 2:
                raise InputError(f"{source}: expected at least 2 held-out prompts")
            tokens = max_new_tokens or lineage.max_new_tokens
            key = (lineage.reference, str(source), len(held), samples, tokens, lineage.temperature)
            if key not in reference_cache:
                reference_cache[key] = sample_replies(
                    lineage.reference, held, samples, tokens, lineage.temperature, seed
                )
            mine = sample_replies(lineage.policy, held, samples, tokens, lineage.temperature, seed)
            stages["policy"], extra = policy_shift(mine, reference_cache[key], attributes)
            sampled[-1] = (key, mine)
            extra["examples"] = [
                {"prompt": held[i][-1]["content"], "reference": reference_cache[key][i][0],
                 "policy": mine[i][0]}
                for i in range(min(3, len(held)))
            ]  # fmt: skip
        report_runs.append(
            {
                "run": str(lineage.run),
                "kind": lineage.kind,
                "lineage": {
                    "preference_data": _str(lineage.preference_data),
                    "reward_model": _str(lineage.reward_model),
                    "policy": _str(lineage.policy),
                    "reference": lineage.reference,
                    "held_out_prompts": prompts or lineage.eval_prompts,
                },
                "warnings": lineage.warnings,
                "stages": {
                    s: {a: e.to_dict() for a, e in stages[s].items()} for s in STAGES if s in stages
                },
                "policy_details": extra,
            }
        )
    report = {
        "attributes": attributes,
        "units": UNITS,
        "probes": {"source": str(probes or PROBES_FILE), "pairs": len(probe_set)},
        "settings": {"n_prompts": n_prompts, "samples": samples, "seed": seed},
        "runs": report_runs,
    }
    report["policy_contrasts"] = policy_contrasts(report, sampled, attributes)
    if out is not None:
        write_report(report, out)
    return report


def policy_contrasts(
    report: dict[str, Any],
    sampled: list[tuple[tuple, list[list[str]]] | None],
    attributes: Sequence[str],
) -> list[dict[str, Any]]:
    """Each later run's policy minus the first sampled run's, paired over held-out prompts.

    Runs whose policies were sampled alike (same reference, prompts, samples, length and
    temperature) met the same prompts and the same random numbers, so their difference is best
    measured directly, reply set against reply set, with a paired t-interval over prompts: the
    reference's own sampling noise, which each run's shift carries, cancels. (Subtracting the two
    shifts' intervals as if independent counts that noise twice.)"""
    labels = run_labels(report)
    base = next((i for i, entry in enumerate(sampled) if entry is not None), None)
    if base is None:
        return []
    first_key, first = sampled[base]
    out = []
    for label, entry in zip(labels[base + 1 :], sampled[base + 1 :], strict=True):
        if entry is None or entry[0] != first_key:
            continue
        shift, _ = policy_shift(entry[1], first, attributes)
        out.append(
            {"run": label, "minus": labels[base], "stage": "policy", "n_prompts": len(first),
             "attributes": {a: e.to_dict() for a, e in shift.items()}}
        )  # fmt: skip
    return out


def _str(p: Path | None) -> str | None:
    return None if p is None else str(p)


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``propagation.json``, ``propagation.txt`` and one PNG per attribute to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_propagation(report, out)
    report["plots"] = [str(p) for p in plots]
    (out / "propagation.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "propagation.txt").write_text(format_propagation(report) + "\n", encoding="utf-8")
    return [out / "propagation.json", out / "propagation.txt", *plots]


def run_labels(report: dict[str, Any]) -> list[str]:
    """Short names of the report's runs: the directory name, or parent/name when two runs share
    a name (runs/balanced/ppo and runs/long/ppo)."""
    paths = [Path(r["run"]) for r in report["runs"]]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _cell(e: dict | None) -> str:
    if e is None:
        return "-"
    if e["estimate"] is None:
        return "n/a"
    star = "*" if e["significant"] else " "
    return f"{e['estimate']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]{star}"


def format_propagation(report: dict[str, Any]) -> str:
    """The table: one row per attribute and run, one column per stage (* = CI excludes 0)."""
    lines = [
        f"{'attribute':11s} {'run':24s} {'raters':28s} {'reward model':28s} {'policy shift':28s}"
    ]
    labels = run_labels(report)
    for a in report["attributes"]:
        for name, r in zip(labels, report["runs"], strict=True):
            cells = [_cell(r["stages"].get(s, {}).get(a)) for s in STAGES]
            lines.append(f"{a:11s} {name[:24]:24s} {cells[0]:28s} {cells[1]:28s} {cells[2]:28s}")
    for name, r in zip(labels, report["runs"], strict=True):
        words = r["policy_details"].get("words")
        if words:
            lines.append(
                f"{name}: mean words {words['reference']:.1f} (reference) ->"
                f" {words['policy']:.1f} (policy)"
            )
        lines.extend(f"warning: {w}" for w in r["warnings"])
    for c in report.get("policy_contrasts", []):
        lines.append(
            f"policy, {c['run']} minus {c['minus']} (paired over {c['n_prompts']} prompts, same"
            " seeds):"
        )
        lines.extend(f"  {a:11s} {_cell(e)}" for a, e in c["attributes"].items())
    lines.append("* the 95% interval excludes 0.  Units:")
    lines.extend(f"  {s}: {u}" for s, u in report["units"].items())
    lines.append("  length = log(1 + words); other attributes are scorers in [0, 1]")
    return "\n".join(lines)


def plot_propagation(report: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per attribute: a panel per stage, a point with its 95 % interval per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = run_labels(report)
    titles = {"raters": "raters (bias profile)", "reward_model": "reward model (probes)",
              "policy": "policy (shift vs reference)"}  # fmt: skip
    for a in report["attributes"]:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
        for ax, stage in zip(axes, STAGES, strict=True):
            for i, r in enumerate(report["runs"]):
                e = r["stages"].get(stage, {}).get(a)
                if e is None or e["estimate"] is None:
                    continue
                err = [[e["estimate"] - e["ci_low"]], [e["ci_high"] - e["estimate"]]]
                ax.errorbar([i], [e["estimate"]], yerr=err, fmt="o", capsize=5, color=f"C{i}")
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
            ax.set_xlim(-0.6, len(names) - 0.4)
            ax.set_title(titles[stage], fontsize=10)
        axes[0].set_ylabel(f"{a} coefficient / shift")
        fig.suptitle(f"{a}: from the raters to the policy (95% CI)", fontsize=11)
        fig.tight_layout()
        path = out / f"propagation-{a}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
