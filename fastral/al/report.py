"""What a run writes: results.json, results.csv, selected_regions.json, PNG plots and the summary table.

* ``results.json``: configuration, split sizes, theta_0's metrics, the policy-training log (per seed and trained
  policy, per episode: rewards, D_R mIoU, TD loss, return and discounted return, the query network's Q of the
  initial state, greedy-episode return every ``greedy_every`` episodes, labelled-class entropy, learning rate,
  epsilon, gradient updates so far), every evaluation (per seed, policy and budget: test mIoU as
  the mean of ``final_repeats`` final trainings of ``final_iterations`` iterations, each repeat's test mIoU in
  ``test_miou_repeats``, per-class IoU, labelled pixels per class and their entropy), mean +- std over seeds per
  policy and budget with the spread over repeats, paired differences to uniform per seed with 95% confidence
  intervals, the per-step timing breakdown, and what was measured about rare classes (the share of labelled pixels
  and the test IoU of the classes rarest in the data).
* ``results.csv``: one row per evaluation (and theta_0), every number above as a column.
* ``selected_regions.json``: per seed and policy, the regions in labelling order with the image file and the pixel
  box (in the file's pixels), so a person could label exactly those.
* ``miou_vs_budget.png``, ``class_frequencies.png`` (the paper's class-balance figures), ``selected_regions.png``
  (selected regions drawn over a few D_V images, the paper's qualitative figure), ``policy_training.png`` (the
  query networks' learning diagnostics per episode: returns, greedy returns, Q of the initial state against the
  discounted return, TD loss, labelled-class entropy, learning rate and epsilon).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .._atomic import atomic_write, write_json
from .loop import class_entropy

RESULTS_FORMAT = "fastral-ralis-results/1"
COLOURS = {
    "ralis": "tab:red",
    "uniform": "tab:gray",
    "entropy": "tab:blue",
    "bald": "tab:green",
    "ralis-untrained": "tab:orange",
    "ralis-shuffled": "tab:purple",
}
REFERENCE_POLICY = "uniform"  # paired differences are reported against it


def plain(x):
    """``x`` as strict-JSON data: NaN floats as None, numpy scalars / arrays and tensors as Python values."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "tolist"):
        return plain(x.tolist())
    return None if isinstance(x, float) and math.isnan(x) else x


def rare_classes(train_distribution, num_classes: int) -> list[int]:
    """Classes holding less than half of a uniform share (1 / 2C) of the source split's labelled pixels."""
    p = np.asarray(train_distribution, np.float64)
    return [int(c) for c in np.flatnonzero(p < 0.5 / num_classes)]


def _mean_std(values) -> tuple[float | None, float | None]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None  # no spread from one value


def summarise(evaluations: list[dict]) -> list[dict]:
    """Per (policy, budget): mean +- std over seeds (of each seed's mean over final-training repeats), and the
    spread over repeats (``test_miou_repeat_std``: the root-mean-square over seeds of the std between repeats of
    one labelled set), in policy order and increasing budget."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in evaluations:
        groups[(r["policy"], r["budget"])].append(r)
    rows = []
    for (policy, budget), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        iou = np.array([[np.nan if v is None else v for v in r["test_iou"]] for r in recs], np.float64)
        row = {"policy": policy, "budget": budget, "seeds": [r["seed"] for r in recs]}
        for key in ("test_miou", "class_entropy", "rare_pixel_fraction", "rare_test_iou"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r.get(key) for r in recs])
        within = [np.var(r["test_miou_repeats"], ddof=1) for r in recs if len(r["test_miou_repeats"]) > 1]
        row["test_miou_repeat_std"] = float(np.sqrt(np.mean(within))) if within else None
        row["repeats"] = [len(r["test_miou_repeats"]) for r in recs]
        with np.errstate(all="ignore"):
            row["test_iou_mean"] = [None if np.isnan(v) else float(v) for v in np.nanmean(iou, 0)] if iou.size else []
        pixels = np.sum([r["labelled_pixels"] for r in recs], 0)
        row["labelled_pixel_fraction"] = (pixels / max(pixels.sum(), 1)).tolist()
        rows.append(row)
    return rows


def paired_differences(evaluations: list[dict], reference: str = REFERENCE_POLICY, level: float = 0.95) -> list[dict]:
    """Per (policy, budget): test mIoU of the policy minus ``reference``'s on the same seed (same split, theta_0,
    pools and final-training seeds), their mean and a Student-t confidence interval (None with one seed)."""
    from scipy import stats

    by_key = {(r["policy"], r["budget"], r["seed"]): r["test_miou"] for r in evaluations}
    rows = []
    for policy, budget in sorted({(p, b) for p, b, _ in by_key if p != reference}, key=lambda pb: (pb[1], pb[0])):
        seeds = sorted(s for p, b, s in by_key if (p, b) == (policy, budget) and (reference, b, s) in by_key)
        if not seeds:
            continue
        diff = np.array([by_key[(policy, budget, s)] - by_key[(reference, budget, s)] for s in seeds])
        row = {
            "policy": policy,
            "reference": reference,
            "budget": budget,
            "seeds": seeds,
            "differences": diff.tolist(),
            "mean": float(diff.mean()),
            "ci_level": level,
            "ci": None,
        }
        if len(diff) > 1:
            half = float(stats.t.ppf(0.5 + level / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
            row["ci"] = [row["mean"] - half, row["mean"] + half]
        rows.append(row)
    return rows


def add_rare_measures(record: dict, rare: list[int]) -> dict:
    """``record`` with the share of its labelled pixels in rare classes and the mean test IoU of those classes."""
    pixels = np.asarray(record["labelled_pixels"], np.float64)
    iou = np.array([np.nan if v is None else v for v in record["test_iou"]], np.float64)[rare]
    with np.errstate(all="ignore"):
        rare_iou = float(np.nanmean(iou)) if np.isfinite(iou).any() else None
    return {
        **record,
        "rare_pixel_fraction": float(pixels[rare].sum() / max(pixels.sum(), 1)),
        "rare_test_iou": rare_iou,
    }


def compile_results(exp, state: dict, policies, run_info: dict, timing: dict) -> dict:
    """Everything the run measured, as one JSON-ready dict."""
    train, names = exp.train, list(exp.train.class_names)
    train_distribution = exp.splits.class_distribution.get("train") or [1.0 / len(names)] * len(names)
    rare = rare_classes(train_distribution, len(names))
    theta0 = exp.theta0_metrics
    evaluations = [add_rare_measures(r, rare) for r in state["evaluations"]]
    tested = len(exp.test_indices) if exp.test_indices is not None else len(exp.test)
    baseline = add_rare_measures(
        {
            **theta0,
            "seed": None,
            "policy": "theta0",
            "budget": 0,
            "labelled_pixels": [0] * len(names),
            "class_entropy": 0.0,
        },
        rare,
    )
    step_fractions = [t["fraction_of_step"]["featurizers"] for t in timing.values() if t["steps"]]
    return plain(
        {
            "format": RESULTS_FORMAT,
            "dataset": {
                "name": train.name,
                "image_size": [train.height, train.width],
                "region": list(train.region),
                "regions_per_image": train.regions.per_image,
                "classes": names,
            },
            "splits": {name: len(exp.images(name)) for name in ("d_s", "d_t", "d_v")}
            | {
                "d_r": len(exp.reward_indices),
                "d_r_split": exp.reward.split,
                "test": tested,
                "test_split": exp.test.split,
                "d_s_kl": exp.splits.d_s_kl,
            },
            "config": exp.config.to_dict(),
            "policies": list(policies),
            "run": run_info,
            "theta0": baseline,
            "policy_training": state["training"],
            "evaluations": evaluations,
            "summary": summarise(evaluations),
            # every policy against uniform, and RALIS against the strongest hand-made rival (entropy in the paper)
            "paired_differences": paired_differences(evaluations)
            + [d for d in paired_differences(evaluations, "entropy") if d["policy"] == "ralis"],
            "timing": {**timing, "featurizers_max_fraction_of_step": max(step_fractions, default=0.0)},
            "measured": {
                "train_class_distribution": train_distribution,
                "rare_classes": [names[c] for c in rare],
                "rare_train_fraction": float(np.asarray(train_distribution)[rare].sum()),
                "note": "rare classes hold < 1/(2C) of the source split's pixels; rare_pixel_fraction is their "
                "share of the labelled pixels (compare with rare_train_fraction: a policy that labels where rare "
                "objects are exceeds it), rare_test_iou their mean test IoU",
            },
        }
    )


def write_csv(path: Path, results: dict) -> Path:
    names = results["dataset"]["classes"]
    columns = [
        "seed",
        "policy",
        "budget",
        "test_miou",
        "test_accuracy",
        "d_r_miou",
        "final_iterations",
        "labelled_images",
        "class_entropy",
        "rare_pixel_fraction",
        "rare_test_iou",
    ]
    repeats = results["config"]["final_repeats"]
    header = columns + [f"test_miou_repeat{k}" for k in range(repeats)] + [f"iou_{n}" for n in names]
    header += [f"pixels_{n}" for n in names]
    rows = [
        [r.get(k) for k in columns]
        + [*r.get("test_miou_repeats", []), *[None] * repeats][:repeats]
        + list(r["test_iou"])
        + list(r["labelled_pixels"])
        for r in [results["theta0"], *results["evaluations"]]
    ]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    data = buffer.getvalue().encode()
    return atomic_write(path, lambda f: f.write(data))


def selected_regions(exp, state: dict) -> dict:
    """Labelling order of every (seed, policy) trajectory, with image files and pixel boxes."""
    train, scale = exp.train, getattr(exp.train, "scale", 1.0)
    runs = []
    for key, traj in state["trajectories"].items():
        seed, policy = key.split("/")
        boxes = train.regions.boxes(traj["region_ids"]) if traj["region_ids"] else np.zeros((0, 5), np.int64)
        regions = []
        for order, (rid, step, (image, y, x, h, w)) in enumerate(
            zip(traj["region_ids"], traj["steps"], boxes.tolist(), strict=True)
        ):
            entry = {
                "order": order,
                "step": step,
                "region_id": int(rid),
                "image_index": image,
                "image": train.path(image),
                "box": {
                    "x": round(x / scale),
                    "y": round(y / scale),
                    "width": round(w / scale),
                    "height": round(h / scale),
                },
            }
            if scale != 1.0:
                entry["box_at_run_scale"] = {"x": x, "y": y, "width": w, "height": h}
            regions.append(entry)
        runs.append({"seed": int(seed), "policy": policy, "regions": regions})
    return {
        "dataset": train.name,
        "split": train.split,
        "root": str(train.root) if train.root else None,
        "note": "regions in labelling order; 'box' is (x, y, width, height) in pixels of the image file; "
        "'image_index' and 'region_id' index the source split in sorted file order",
        "runs": runs,
    }


# -- plots ------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_miou(path: Path, results: dict) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    theta0 = results["theta0"]["test_miou"]
    d_v_regions = results["splits"]["d_v"] * results["dataset"]["regions_per_image"]
    for k, policy in enumerate(results["policies"]):
        rows = [r for r in results["summary"] if r["policy"] == policy and r["test_miou_mean"] is not None]
        x = np.array([0] + [r["budget"] for r in rows], np.float64)
        m = 100 * np.array([theta0] + [r["test_miou_mean"] for r in rows])
        s = 100 * np.array([0.0] + [r["test_miou_std"] or 0.0 for r in rows])
        rep = 100 * np.array([0.0] + [r["test_miou_repeat_std"] or 0.0 for r in rows])
        colour = COLOURS.get(policy)
        shift = (k - (len(results["policies"]) - 1) / 2) * 0.004 * max(x.max(), 1)  # keep error bars apart
        ax.errorbar(x + shift * (x > 0), m, yerr=rep, fmt="o-", color=colour, capsize=3, label=policy)
        ax.fill_between(x, m - s, m + s, color=colour, alpha=0.15)
    ax.axhline(100 * theta0, color="k", ls=":", lw=1, label="theta_0")
    ax.set_xlabel(f"budget (regions labelled; D_V has {d_v_regions})")
    ax.set_ylabel("test mIoU (%)")
    seeds, repeats = len(results["config"]["seeds"]), results["config"]["final_repeats"]
    ax.set_title(
        f"{results['dataset']['name']}: mean over {seeds} seed{'s' * (seeds > 1)}; band: std over seeds,\n"
        f"bars: std over {repeats} final trainings of one labelled set",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_policy_training(path: Path, results: dict) -> Path | None:
    """Learning diagnostics of the query networks, one panel per quantity, one line per seed and trained policy:
    is the query network learning?"""
    runs = {k: v for k, v in results["policy_training"].items() if v}
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    seeds = sorted({k.split("/")[0] for k in runs}, key=int)
    panels = [
        ("return", "episode return (epsilon-greedy; x: greedy episode)", False),
        ("discounted_return", "discounted return (line) and the network's Q(s_0) (dotted)", False),
        ("mean_dqn_loss", "mean TD (Huber) loss", True),
        ("class_entropy", "class entropy of the labelled pixels (nats)", False),
        ("final_d_r_miou", "D_R mIoU at the end of the episode", False),
        ("lr", "query-network learning rate (line) and epsilon (dotted)", True),
    ]
    for ax, (key, title, log) in zip(axes.flat, panels, strict=True):
        for name, episodes in runs.items():
            seed, policy = name.split("/")
            colour = f"C{seeds.index(seed) % 10}"
            style = "-" if policy == "ralis" else "--"
            x = [e["episode"] for e in episodes]
            y = [np.nan if e.get(key) is None else e[key] for e in episodes]
            ax.plot(x, y, style, color=colour, lw=1.2, label=name)
            if key == "return":
                greedy = [(e["episode"], e["greedy_return"]) for e in episodes if e.get("greedy_return") is not None]
                if greedy:
                    ax.plot(*zip(*greedy, strict=True), "x", color=colour, ms=7)
            if key == "discounted_return":
                ax.plot(x, [e.get("q_initial") for e in episodes], ":", color=colour, lw=1.5)
            if key == "lr":
                ax.plot(x, [e.get("epsilon_start") for e in episodes], ":", color=colour, lw=1.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("episode")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{results['dataset']['name']}: query-network training (solid: ralis, dashed: ralis-shuffled)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_class_frequencies(path: Path, results: dict) -> Path:
    """Class frequencies of the labelled pixels at the largest budget per policy, and their entropy."""
    plt = _pyplot()
    names, budget = results["dataset"]["classes"], results["config"]["budgets"][-1]
    rows = {r["policy"]: r for r in results["summary"] if r["budget"] == budget}
    policies = [p for p in results["policies"] if p in rows]
    fig, (ax, ax_h) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / (len(policies) + 1)
    x = np.arange(len(names))
    ax.bar(x, results["measured"]["train_class_distribution"], width, color="k", alpha=0.3, label="all labels")
    for k, policy in enumerate(policies):
        ax.bar(
            x + (k + 1) * width, rows[policy]["labelled_pixel_fraction"], width, color=COLOURS.get(policy), label=policy
        )
    ax.set_xticks(x + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("fraction of labelled pixels")
    ax.set_title(f"class frequencies of the labelled pixels, budget {budget}")
    ax.legend(fontsize=8)
    means = [rows[p]["class_entropy_mean"] or 0.0 for p in policies]
    stds = [rows[p]["class_entropy_std"] or 0.0 for p in policies]
    ax_h.bar(policies, means, yerr=stds, color=[COLOURS.get(p) for p in policies], capsize=4)
    train = np.asarray(results["measured"]["train_class_distribution"])
    ax_h.axhline(class_entropy(train), color="k", ls=":", lw=1, label="all labels")
    ax_h.set_ylabel("entropy of the class distribution (nats)")
    ax_h.set_title("class balance")
    ax_h.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_selected_regions(path: Path, exp, state: dict, seed: int, policies, images: int = 3) -> Path | None:
    """The D_V images where the policies of ``seed`` labelled most, with each policy's regions outlined."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    trajs = {p: state["trajectories"].get(f"{seed}/{p}") for p in policies}
    trajs = {p: t for p, t in trajs.items() if t and t["region_ids"]}
    if not trajs:
        return None
    grid = exp.train.regions
    owners = {p: grid.image_of(t["region_ids"]) for p, t in trajs.items()}
    counts = np.bincount(np.concatenate(list(owners.values())), minlength=grid.num_images)
    chosen = np.argsort(-counts, kind="stable")[:images]
    chosen = [int(i) for i in chosen if counts[i]]
    fig, axes = plt.subplots(len(chosen), len(trajs), figsize=(3 * len(trajs), 2.4 * len(chosen)), squeeze=False)
    for row, image in enumerate(chosen):
        rgb = exp.train.image_uint8(image)
        for col, (policy, traj) in enumerate(trajs.items()):
            ax = axes[row, col]
            ids = np.asarray(traj["region_ids"])[owners[policy] == image]
            shade = np.zeros(rgb.shape[:2], bool)
            for _, y, x, h, w in grid.boxes(ids).tolist():
                shade[y : y + h, x : x + w] = True
            ax.imshow(np.where(shade[..., None], rgb, (rgb * 0.35).astype(np.uint8)))
            for _, y, x, h, w in grid.boxes(ids).tolist():
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=COLOURS.get(policy, "y"), lw=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(policy)
            if col == 0:
                ax.set_ylabel(f"image {image}", fontsize=8)
    fig.suptitle(f"selected regions (seed {seed}, budget {exp.config.budgets[-1]})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- text -------------------------------------------------------------------------------------------------------
def _pm(mean, std, scale=100.0, digits=2) -> str:
    if mean is None:
        return "n/a"
    return f"{scale * mean:.{digits}f}" + ("" if std is None else f" +- {scale * std:.{digits}f}")


def _signed(x: float) -> str:
    return f"{100 * x:+.2f}"


def summary_table(results: dict) -> str:
    c = results["config"]
    budgets, seeds = c["budgets"], c["seeds"]
    rows = {(r["policy"], r["budget"]): r for r in results["summary"]}
    lines = []
    if c.get("preset") == "smoke":
        lines += [
            f"SMOKE RUN: the '{c['dataset']}' smoke preset checks that the pipeline works end to end; with "
            f"{len(seeds)} seed{'s' * (len(seeds) > 1)} and {c['episodes']} policy-training episodes its "
            "numbers are not evidence for or against any policy.",
            "",
        ]
    head = f"{'policy':<16s}" + "".join(f"{'budget ' + str(b):>26s}" for b in budgets)
    lines += [
        f"test mIoU (%): mean +- std over {len(seeds)} seed{'s' * (len(seeds) > 1)} {list(seeds)}, each seed "
        f"the mean of {c['final_repeats']} final trainings of {c['final_iterations']} iterations [std between "
        f"those repeats]; theta_0: {100 * results['theta0']['test_miou']:.2f}",
        head,
    ]
    for policy in results["policies"]:
        cells = []
        for b in budgets:
            r = rows.get((policy, b))
            rep = "" if r is None or r["test_miou_repeat_std"] is None else f" [{100 * r['test_miou_repeat_std']:.2f}]"
            cells.append("n/a" if r is None else _pm(r["test_miou_mean"], r["test_miou_std"]) + rep)
        lines.append(f"{policy:<16s}" + "".join(f"{cell:>26s}" for cell in cells))
    order = {p: k for k, p in enumerate(results["policies"])}
    by_reference = lambda d: (d["reference"] != "uniform", order.get(d["policy"], len(order)), d["budget"])  # noqa: E731
    paired = sorted(results["paired_differences"], key=by_reference)
    if paired:
        lines += [
            "",
            f"paired differences (test mIoU points, same seed): mean, 95% CI over seeds, then per seed "
            f"{list(paired[0]['seeds'])}",
        ]
        for d in paired:
            ci = "n/a (one seed)" if d["ci"] is None else f"[{_signed(d['ci'][0])}, {_signed(d['ci'][1])}]"
            per_seed = ", ".join(_signed(x) for x in d["differences"])
            name = f"{d['policy']} - {d['reference']}"
            lines.append(
                f"{name:<28s} budget {d['budget']:<6d} {_signed(d['mean']):>7s}  CI {ci:<18s} seeds: {per_seed}"
            )
    rare = ", ".join(results["measured"]["rare_classes"])
    lines += [
        "",
        f"class balance: entropy of labelled classes (nats) | share of labelled pixels in rare classes "
        f"({rare}; {100 * results['measured']['rare_train_fraction']:.1f}% of all labels) | rare-class test IoU",
    ]
    for b in budgets:
        lines.append(f"budget {b}:")
        for policy in results["policies"]:
            r = rows.get((policy, b))
            if r:
                lines.append(
                    f"  {policy:<16s}{_pm(r['class_entropy_mean'], r['class_entropy_std'], 1, 3):>16s} | "
                    f"{_pm(r['rare_pixel_fraction_mean'], r['rare_pixel_fraction_std'], 100, 1):>14s} % | "
                    f"{_pm(r['rare_test_iou_mean'], r['rare_test_iou_std']):>16s} %"
                )
    lines += ["", "seconds per AL step (featurizers' share of the step)"]
    for phase in ("policy_training", "evaluation"):
        t = results["timing"].get(phase)
        if t and t["steps"]:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in t["seconds_per_step"].items() if v >= 0.0005)
            lines.append(
                f"{phase}: {t['steps']} steps, {t['step_seconds_total'] / t['steps']:.2f} s/step "
                f"(featurizers {100 * t['fraction_of_step']['featurizers']:.1f}%): {parts}"
            )
    final = results["timing"].get("evaluation", {}).get("other_seconds", {}).get("final_training")
    if final:
        lines.append(f"final trainings: {final:.1f} s in all")
    return "\n".join(lines)


def write_report(out: Path, exp, state: dict, policies, run_info: dict, timing: dict, plots: bool = True) -> dict:
    """Write every output file of the run; returns the results dict."""
    results = compile_results(exp, state, policies, run_info, timing)
    write_json(out / "results.json", results)
    write_csv(out / "results.csv", results)
    write_json(out / "selected_regions.json", plain(selected_regions(exp, state)))
    if plots:
        plot_policy_training(out / "policy_training.png", results)
    if plots and results["evaluations"]:
        plot_miou(out / "miou_vs_budget.png", results)
        plot_class_frequencies(out / "class_frequencies.png", results)
        plot_selected_regions(out / "selected_regions.png", exp, state, exp.config.seeds[0], policies)
    return results
