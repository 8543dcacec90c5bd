"""Plots, inline audio and the augmentation explorer: the only module that imports matplotlib,
IPython or ipywidgets. Figures carry axis labels in units (s, Hz, dB)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, display

from fplib import audio, codes
from fplib.augment import STEPS, Augmenter, Draws
from fplib.data import IRBank, NoiseBank, item_rng, read_with_context, torch_generator
from fplib.features import FrontEnd, LogMel, hz_to_mel
from fplib.models.registry import loss_name

STEP_TITLES = {
    "clean": "clean",
    "offset": "+ time offset",
    "speed": "+ playback speed",
    "ir": "+ room impulse response",
    "noise": "+ background noise",
    "eq": "+ microphone colouration",
    "bandlimit": "+ band-limiting",
    "gain": "+ automatic gain",
    "clip": "+ clipping",
    "codec": "+ lossy codec",
    "time_mask": "+ time mask",
    "spec_mask": "+ spectrogram masks",
}
# what show_steps and the explorer switch on to show every step (the codec is drawn from the config's codecs)
_FORCED = dict(
    offset_p=1.0,
    speed_p=1.0,
    ir_p=1.0,
    noise_p=1.0,
    eq_p=1.0,
    bandlimit_p=1.0,
    gain_p=1.0,
    clip_p=1.0,
    codec_p=1.0,
    time_mask_p=1.0,
    freq_mask_p=1.0,
    spec_time_mask_p=1.0,
)


def show(fig: plt.Figure) -> None:
    """Display a figure once (inline or headless) and free it."""
    display(fig)
    plt.close(fig)


def player(wav: np.ndarray | torch.Tensor, sr: int = audio.SR) -> Audio:
    """An inline audio player that does not normalise (so relative levels and SNR stay audible)."""
    wav = np.clip(np.asarray(torch.as_tensor(wav).detach().cpu(), dtype=np.float32), -1.0, 1.0)
    return Audio(wav, rate=sr, normalize=False)


def _logmel_axes(ax: plt.Axes, spec: np.ndarray, fe: FrontEnd, title: str) -> None:
    """Draw one log-mel ``[n_mels, n_frames]`` with time in s and frequency in Hz."""
    duration = fe.win_s
    im = ax.imshow(
        spec,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=fe.floor_db,
        vmax=0.0,
        extent=(0.0, duration, 0, fe.n_mels),
    )
    ticks_hz = [f for f in (300, 500, 1000, 2000, 3000, 4000) if fe.f_min <= f <= fe.f_max]
    mels = hz_to_mel(np.array(ticks_hz, dtype=float))
    lo, hi = hz_to_mel(fe.f_min), hz_to_mel(fe.f_max)
    ax.set_yticks((mels - lo) / (hi - lo) * fe.n_mels, [str(f) for f in ticks_hz])
    ax.set_ylabel("frequency (Hz)")
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    plt.colorbar(im, ax=ax, label="dB")


def _wave_axes(ax: plt.Axes, wav: np.ndarray, sr: int, title: str) -> None:
    t = np.arange(wav.shape[0]) / sr
    ax.plot(t, wav, lw=0.5)
    ax.set_xlim(0, t[-1] if len(t) else 1)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.set_title(title, fontsize=9)


def plot_pair(
    clean: np.ndarray,
    degraded: np.ndarray,
    fe: FrontEnd = FrontEnd(),
    feats: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
) -> plt.Figure:
    """Waveform and log-mel of a clean window next to its degraded replica (2 x 2 panels)."""
    if feats is None:
        lm = LogMel(fe)
        with torch.no_grad():
            feats = tuple(lm(torch.as_tensor(w, dtype=torch.float32)[None])[0, 0].numpy() for w in (clean, degraded))
    fig, axes = plt.subplots(2, 2, figsize=(11, 5.5), constrained_layout=True)
    for col, (wav, spec, name) in enumerate(zip((clean, degraded), feats, ("clean", "degraded"))):
        _wave_axes(axes[0, col], np.asarray(wav), fe.sr, f"{name}: waveform")
        _logmel_axes(axes[1, col], np.asarray(spec), fe, f"{name}: log-mel")
    if title:
        fig.suptitle(title)
    return fig


def plot_steps(
    steps: dict[str, torch.Tensor],
    fe: FrontEnd = FrontEnd(),
    masked: np.ndarray | None = None,
    index: int = 0,
    title: str = "",
) -> plt.Figure:
    """One row per augmentation step (waveform | log-mel) for example ``index`` of a batch from
    :meth:`Augmenter.degrade` with ``return_steps=True``; ``masked`` adds the final masked log-mel."""
    names = ["clean", *STEPS]
    rows = len(names) + (masked is not None)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.2 * rows), constrained_layout=True)
    lm = LogMel(fe)
    for r, name in enumerate(names):
        wav = steps[name][index].detach().cpu().float()
        with torch.no_grad():
            spec = lm(wav[None])[0, 0].numpy()
        _wave_axes(axes[r, 0], wav.numpy(), fe.sr, STEP_TITLES[name])
        _logmel_axes(axes[r, 1], spec, fe, STEP_TITLES[name])
    if masked is not None:
        axes[-1, 0].axis("off")
        _logmel_axes(axes[-1, 1], masked, fe, STEP_TITLES["spec_mask"])
    if title:
        fig.suptitle(title)
    return fig


def plot_impulse_responses(bank: IRBank, sr: int = audio.SR, n: int = 6) -> plt.Figure:
    """Energy decay (dB) of the first ``n`` impulse responses of a bank."""
    fig, ax = plt.subplots(figsize=(8, 3.5), constrained_layout=True)
    for f, ir in list(zip(bank.files, bank.irs))[:n]:
        edc = np.cumsum(ir[::-1] ** 2)[::-1]
        ax.plot(np.arange(len(ir)) / sr, 10 * np.log10(edc / edc[0] + 1e-12), label=Path(f).stem, lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("energy decay (dB)")
    ax.set_ylim(-60, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("room impulse responses: Schroeder energy decay")
    return fig


def plot_spectra(waves: Sequence[np.ndarray], labels: Sequence[str], sr: int = audio.SR) -> plt.Figure:
    """Average power spectra (Welch) of a few signals, in dB."""
    from scipy.signal import welch

    fig, ax = plt.subplots(figsize=(8, 3.5), constrained_layout=True)
    for w, lab in zip(waves, labels):
        f, p = welch(w, fs=sr, nperseg=1024)
        ax.plot(f, 10 * np.log10(p + 1e-12), lw=1, label=lab)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power (dB)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _example(
    song: str | Path,
    second: int,
    irs: IRBank,
    noises: NoiseBank,
    augmenter: Augmenter,
    seed: int,
    ir_index: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Draws]:
    """One display example: the segment (with context), a noise excerpt, an IR and drawn decisions."""
    fe = augmenter.fe
    duration = audio.info(song).duration
    seg = read_with_context(song, float(second), fe.win_s, augmenter.context / fe.sr, duration, fe.sr)
    rng = item_rng(seed, "display", str(song), second)
    noise = torch.from_numpy(noises.sample(rng, fe.win_len))[None]
    ir = torch.from_numpy(irs.irs[ir_index] if ir_index is not None else irs.sample(rng))[None]
    return torch.from_numpy(seg)[None], noise, ir, augmenter.draw(1, torch_generator(rng))


def show_steps(
    song: str | Path, second: int, irs: IRBank, noises: NoiseBank, augmenter: Augmenter, seed: int = 0
) -> None:
    """Every augmentation step forced on for one second of a song: one row per step (waveform |
    log-mel), then an audio player per step."""
    import dataclasses

    fe = augmenter.fe
    forced = Augmenter(dataclasses.replace(augmenter.cfg, **_FORCED), fe)
    seg, noise, ir, d = _example(song, second, irs, noises, forced, seed)
    d.fmask_width = d.fmask_width.clamp_min(16)
    d.fmask_start = d.fmask_start.clamp_max(fe.n_mels - d.fmask_width)
    _, deg, steps = forced.degrade(seg, noise, ir, d, return_steps=True)
    with torch.no_grad():
        masked = forced.spec_mask(forced.features(deg), d)[0, 0].numpy()
    codec = forced.cfg.codecs[int(d.codec_id)]
    title = (
        f"{Path(song).name}, second {second}: offset {int(d.offset) / fe.sr * 1000:.0f} ms, "
        f"speed {float(d.speed):.3f}, SNR {float(d.snr_db):.1f} dB, band {float(d.highpass_hz):.0f}-"
        f"{float(d.lowpass_hz):.0f} Hz, clip +{float(d.clip_drive_db):.0f} dB, {codec[0]} {codec[1]:g} kb/s"
    )
    show(plot_steps(steps, fe, masked, title=title))
    for name in ("clean", *STEPS):
        print(STEP_TITLES[name])
        display(player(steps[name][0], fe.sr))


def explorer(songs: Sequence[Path], irs: IRBank, noises: NoiseBank, augmenter: Augmenter, seed: int = 0) -> dict:
    """Interactive augmentation explorer: song, second, SNR, impulse response, each step on or off.

    Displays the figure and audio for the default settings as plain output (the static view, what a
    headless run such as papermill or nbval keeps), then the widgets and an output area under them
    that re-renders whenever a control changes (in JupyterLab). Returns the controls and the output
    widget (``{"controls": {...}, "output": Output}``).

    The output area is filled only on a change, never while the cell runs, unlike
    ``ipywidgets.interactive_output``, which renders into its Output widget at once. A headless client
    (nbclient, under papermill and nbval) has no browser and emulates an Output widget that captures
    output: it writes the widget's new state back to the kernel on the shell channel while it waits
    on that channel for the cell's reply, and that exchange can leave the run waiting for the cell
    timeout. With nothing captured during the cell, a headless run sends the kernel nothing back.
    """
    import dataclasses

    import ipywidgets as W
    from IPython.display import clear_output

    augmenter = Augmenter(dataclasses.replace(augmenter.cfg, **_FORCED), augmenter.fe)  # every step drawn
    fe = augmenter.fe
    durations = {str(s): audio.info(s).duration for s in songs}
    song_w = W.Dropdown(options=[(Path(s).name, str(s)) for s in songs], description="song")
    sec_w = W.IntSlider(value=1, min=0, max=max(0, int(durations[str(songs[0])]) - 1), description="second (s)")
    snr_w = W.FloatSlider(value=5.0, min=-5.0, max=30.0, step=0.5, description="SNR (dB)")
    ir_w = W.Dropdown(options=[(Path(f).stem, i) for i, f in enumerate(irs.files)], description="room")
    offset_w = W.IntSlider(
        value=0,
        min=-int(augmenter.cfg.offset_max_s * 1000),
        max=int(augmenter.cfg.offset_max_s * 1000),
        step=10,
        description="offset (ms)",
    )
    on_w = {
        s: W.Checkbox(value=s in ("ir", "noise"), description=STEP_TITLES[s].lstrip("+ "))
        for s in (*STEPS[1:], "spec_mask")
    }

    def render(song: str, second: int, snr: float, ir_index: int, offset_ms: int, **on: bool) -> None:
        second = min(second, max(0, int(durations[song]) - 1))
        seg, noise, ir, d = _example(song, second, irs, noises, augmenter, seed, ir_index)
        d.offset = torch.tensor([int(offset_ms * fe.sr / 1000)])
        d.snr_db = torch.tensor([float(snr)])
        d.ir_on, d.noise_on = torch.tensor([on["ir"]]), torch.tensor([on["noise"]])
        d.band_on, d.tmask_on = torch.tensor([on["bandlimit"]]), torch.tensor([on["time_mask"]])
        d.speed = d.speed if on["speed"] else None
        d.eq_on, d.gain_on = torch.tensor([on["eq"]]), torch.tensor([on["gain"]])
        d.clip_on, d.codec_on = torch.tensor([on["clip"]]), torch.tensor([on["codec"]])
        d.fmask_on = d.smask_on = torch.tensor([on["spec_mask"]])
        if on["spec_mask"]:  # make the masks visible whatever was drawn
            d.fmask_width = d.fmask_width.clamp_min(16)
            d.smask_width = d.smask_width.clamp_min(1)
            d.smask_start = d.smask_start.clamp_max(fe.n_frames - d.smask_width)
            d.fmask_start = d.fmask_start.clamp_max(fe.n_mels - d.fmask_width)
        clean, deg = augmenter.degrade(seg, noise, ir, d)
        with torch.no_grad():
            fc = augmenter.features(clean)
            fd = augmenter.spec_mask(augmenter.features(deg), d)
        room = Path(irs.files[ir_index]).stem
        fig = plot_pair(
            clean[0].numpy(),
            deg[0].numpy(),
            fe,
            (fc[0, 0].numpy(), fd[0, 0].numpy()),
            title=f"{Path(song).name}, second {second}, SNR {snr:.1f} dB, room {room}",
        )
        show(fig)
        print("clean:")
        display(player(clean[0], fe.sr))
        print("degraded:")
        display(player(deg[0], fe.sr))

    controls = dict(song=song_w, second=sec_w, snr=snr_w, ir_index=ir_w, offset_ms=offset_w, **on_w)
    render(**{k: w.value for k, w in controls.items()})  # the static view (kept by headless runs)

    out = W.Output()

    def rerender(change: dict) -> None:  # runs when a front end changes a control
        with out:
            clear_output(wait=True)
            render(**{k: w.value for k, w in controls.items()})

    def on_song(change: dict) -> None:
        sec_w.max = max(0, int(durations[change["new"]]) - 1)

    song_w.observe(on_song, names="value")
    for w in controls.values():
        w.observe(rerender, names="value")
    ui = W.VBox([W.HBox([song_w, sec_w]), W.HBox([snr_w, ir_w, offset_w]), W.HBox(list(on_w.values()))])
    display(
        W.HTML(
            "<b>Interactive explorer</b> (in JupyterLab: change a control and the figure and audio "
            "for the new settings appear under the controls; the figure above is the static view)"
        ),
        ui,
        out,
    )
    return {"controls": controls, "output": out}


def plot_training(history: Sequence[dict], title: str = "", model: str | None = None) -> plt.Figure:
    """Loss (train and validation) and validation top-1 hit rate against the epoch; the loss is named as
    registered model ``model``'s registry entry names it (plain "loss" without one)."""
    ep = [h["epoch"] + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5), constrained_layout=True)
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "s-", label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel(f"{loss_name(model)} loss" if model else "loss")
    a.legend()
    b.plot(ep, [100 * h["val_top1"] for h in history], "o-", color="C2")
    best = [h for h in history if h.get("best")]
    if best:
        b.plot([best[-1]["epoch"] + 1], [100 * best[-1]["val_top1"]], "*", ms=14, color="C3", label="best (kept)")
        b.legend()
    b.set_xlabel("epoch")
    b.set_ylabel("validation top-1 hit rate (%)")
    b.set_ylim(0, 100)
    if title:
        fig.suptitle(title)
    return fig


def plot_neighbours(nn: dict, fe: FrontEnd = FrontEnd()) -> plt.Figure:
    """Each degraded validation query (left) next to its nearest clean windows, with their scores;
    a green title marks the true match."""
    n, k = nn["scores"].shape
    fig, axes = plt.subplots(n, k + 1, figsize=(3.2 * (k + 1), 2.6 * n), constrained_layout=True, squeeze=False)
    for i in range(n):
        _logmel_axes(axes[i, 0], nn["queries"][i, 0].numpy(), fe, f"query {i} (degraded)")
        for j in range(k):
            ok = int(nn["index"][i, j]) == i
            _logmel_axes(
                axes[i, j + 1],
                nn["neighbours"][i, j, 0].numpy(),
                fe,
                f"#{j + 1}: window {int(nn['index'][i, j])}, score {float(nn['scores'][i, j]):.2f}",
            )
            axes[i, j + 1].title.set_color("green" if ok else "black")
    return fig


def plot_similarity(a: np.ndarray, b: np.ndarray, hop_s: float, title: str = "", kind: str = "float") -> plt.Figure:
    """Similarities between stored fingerprints ``a`` (rows) and ``b`` (columns) of ``kind`` (the model's, see
    :func:`fplib.models.registry.kind_of_model`): inner products of unit vectors, or 1 - 2 h / D of binary
    codes (:mod:`fplib.codes`), both 1 for identical fingerprints and about 0 for unrelated ones."""
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    im = ax.imshow(
        codes.similarity_matrix(a, b, kind),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        vmin=-0.2,
        vmax=1.0,
        extent=(0, len(b) * hop_s, 0, len(a) * hop_s),
    )
    ax.set_xlabel("time in the second sequence (s)")
    ax.set_ylabel("time in the song (s)")
    plt.colorbar(im, ax=ax, label="inner product" if kind == "float" else "1 - 2 x Hamming distance / bits")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_hit_rates(table: Sequence[dict], key: str = "top1") -> plt.Figure:
    """Hit rate against query length, one line per SNR, one panel per system."""
    systems = list(dict.fromkeys(r["system"] for r in sorted(table, key=lambda r: r["system"] != "neural")))
    cols = min(3, len(systems))  # at most three panels a row
    rows_ = -(-len(systems) // cols)
    fig, axes = plt.subplots(
        rows_, cols, figsize=(5.0 * cols, 3.4 * rows_), constrained_layout=True, squeeze=False, sharey=True
    )
    for ax in axes.flat[len(systems) :]:
        ax.set_visible(False)
    for ax, system in zip(axes.flat, systems):
        rows = [r for r in table if r["system"] == system and r[key] is not None]
        for snr in sorted({r["snr_db"] for r in rows}):
            pts = sorted((r["length_s"], 100 * r[key]) for r in rows if r["snr_db"] == snr)
            ax.plot(*zip(*pts), "o-", label=f"{snr:g} dB SNR")
        ax.set_xlabel("query length (s)")
        ax.set_title(system)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{key} hit rate (%)")
    axes.flat[len(systems) - 1].legend(fontsize=8)
    return fig


def format_table(table: Sequence[dict]) -> str:
    """The evaluation table as aligned text: one row per system, length and SNR (``ranked1``: the
    right answer ranked first before the "not in the database" threshold)."""
    head = f"{'system':10s}{'length':>8s}{'SNR':>6s}{'n':>5s}" + "".join(
        f"{c:>8s}" for c in ("top-1", "top-3", "song", "ranked1", "FP", "ms")
    )
    lines = [head]
    for r in table:

        def pct(v):
            return f"{100 * v:7.1f}%" if v is not None else f"{'-':>8s}"

        snr = "all" if r["snr_db"] is None else f"{r['snr_db']:g}"
        lines.append(
            f"{r['system']:10s}{r['length_s']:7g}s{snr:>6s}{r['n']:5d}{pct(r['top1'])}"
            f"{pct(r['top3'])}{pct(r['song'])}{pct(r.get('ranked1'))}{pct(r['fp_rate'])}"
            f"{r['ms_per_query']:8.1f}"
        )
    return "\n".join(lines)


HEADLINE_COLUMNS = ("top-1", "ranked first", "FP", "ms per query", "DB bytes/s")


def headline_markdown(rows: Sequence[dict]) -> str:
    """The headline table (:func:`fplib.evaluate.headline`) as a markdown table: one row per system
    and query length, then a line with the number of queries behind each row."""

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    lines = [
        "| system | query | " + " | ".join(HEADLINE_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(HEADLINE_COLUMNS),
    ]
    for r in rows:
        db = "-" if r.get("db_bytes_per_s") is None else f"{r['db_bytes_per_s']:,.0f}"
        lines.append(
            f"| {r['system']} | {r['length_s']:g} s | {pct(r['top1'])} | {pct(r['ranked1'])} | "
            f"{pct(r['fp_rate'])} | {r['ms_per_query']:.1f} | {db} |"
        )
    n_in = sorted({r["n"] for r in rows})
    n_out = sorted({r["n_out"] for r in rows})
    lines.append("")
    lines.append(
        f"Each row: {'/'.join(map(str, n_in))} in-database and {'/'.join(map(str, n_out))} "
        f"out-of-database queries, all SNRs together."
    )
    return "\n".join(lines)


def plot_systems(head: Sequence[dict]) -> plt.Figure:
    """The systems side by side (:func:`fplib.evaluate.headline` rows, SNRs pooled): top-1 (accepted) and
    ranked1 (ranked first, before the threshold) against query length, one line per system; the legend
    gives each system's database bytes per second of audio and its mean time per query."""
    systems = list(dict.fromkeys(r["system"] for r in head))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True, sharey=True)
    for ax, key, title in (
        (axes[0], "top1", "top-1 (right and accepted)"),
        (axes[1], "ranked1", "ranked first (before the threshold)"),
    ):
        for i, system in enumerate(systems):
            rows = sorted(
                (r for r in head if r["system"] == system and r.get(key) is not None), key=lambda r: r["length_s"]
            )
            if not rows:
                continue
            ms = np.mean([r["ms_per_query"] for r in rows])
            size = rows[0].get("db_bytes_per_s")
            label = f"{system} ({size:.0f} B/s, {ms:.0f} ms)" if size else f"{system} ({ms:.0f} ms)"
            ax.plot([r["length_s"] for r in rows], [100 * r[key] for r in rows], "o-", color=f"C{i}", label=label)
        ax.set_xlabel("query length (s)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hit rate (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    return fig


def show_headline(rows: Sequence[dict]) -> None:
    """Display the headline table (rendered markdown in Jupyter; its text in a headless log)."""
    text = headline_markdown(rows)
    display({"text/markdown": text, "text/plain": text}, raw=True)


def plot_confidences(
    conf: dict[float, dict[str, list[float]]], thresholds: dict[float, float], decision: str = "margin", seed: int = 0
) -> plt.Figure:
    """The confidence of every query against the "in the database" threshold, one panel per query
    length (:func:`fplib.evaluate.confidences`): in-database queries answered right (green) or not
    (red), out-of-database queries (grey); above the dashed line a query is accepted."""
    lengths = sorted(conf)
    fig, axes = plt.subplots(
        1, len(lengths), figsize=(2.4 * len(lengths) + 1.0, 3.8), constrained_layout=True, squeeze=False, sharey=True
    )
    rng = np.random.default_rng(seed)
    styles = (
        ("right", 0, "C2", "in the database, right answer ranked first"),
        ("wrong", 0, "C3", "in the database, wrong answer ranked first"),
        ("out", 1, "0.45", "not in the database"),
    )
    for ax, length in zip(axes[0], lengths):
        for kind, x, color, label in styles:
            y = np.asarray(conf[length][kind], dtype=float)
            ax.scatter(
                x + rng.uniform(-0.18, 0.18, len(y)), y, s=12, color=color, alpha=0.7, label=label, edgecolors="none"
            )
        t = thresholds.get(length)
        if t is not None and np.isfinite(t):
            ax.axhline(t, color="k", ls="--", lw=1, label="threshold")
        ax.set_xticks([0, 1], ["in DB", "not in DB"])
        ax.set_xlim(-0.5, 1.5)
        ax.set_xlabel("query")
        ax.set_title(f"{length:g}-s queries", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("margin over the next song" if decision == "margin" else "best score")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle("confidence of each query against the threshold (accepted above the dashed line)", fontsize=10)
    return fig


def plot_alignment(al: dict, truth_s: float | None = None, title: str = "") -> plt.Figure:
    """A query's windows against the database windows of the found song around the found offset
    (:meth:`fplib.search.Recognizer.alignment`): inner products as a heat map, the chosen alignment
    (song time = offset + query time) as a dashed line, the true start (if known) as a dotted one."""
    sim, q_s, s_s = al["similarity"], al["query_s"], al["song_s"]
    dq = q_s[1] - q_s[0] if len(q_s) > 1 else 0.5
    ds = s_s[1] - s_s[0] if len(s_s) > 1 else 0.5
    fig, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
    im = ax.imshow(
        sim,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        vmin=-0.2,
        vmax=1.0,
        interpolation="nearest",
        extent=(s_s[0] - ds / 2, s_s[-1] + ds / 2, q_s[0] - dq / 2, q_s[-1] + dq / 2),
    )
    ends = np.array([q_s[0], q_s[-1]])
    ax.plot(al["offset_s"] + ends, ends, "w--", lw=1.5, label=f"found: starts at {al['offset_s']:.2f} s")
    if truth_s is not None:
        ax.plot(truth_s + ends, ends, ":", color="C1", lw=1.5, label=f"truth: starts at {truth_s:.2f} s")
    ax.set_xlim(s_s[0] - ds / 2, s_s[-1] + ds / 2)
    ax.set_xlabel(f"window start in the song {al['song']} (s)")
    ax.set_ylabel("window start in the query (s)")
    ax.legend(fontsize=8, loc="upper left")
    plt.colorbar(im, ax=ax, label="inner product")
    ax.set_title(title or "the query's windows against the song's around the found offset", fontsize=9)
    return fig


def plot_timeline(truth: Sequence[dict], found: Sequence[dict], title: str = "") -> plt.Figure:
    """A long recording as a timeline: one row per song, bars where it plays, the truth (grey, upper half of the
    row) above what was found (lower half: green where it overlaps the truth of the same song, red where not);
    the last row, the unknown stretches (audio from outside the catalogue: truth grey, found blue).
    ``truth`` and ``found``: dicts with ``song`` (None for an unknown stretch), ``start_s`` and ``end_s``
    (e.g. :meth:`fplib.segments.Segment.to_json`)."""
    unknown = "(not in the catalogue)"
    songs = sorted({s["song"] for s in [*truth, *found] if s["song"] is not None}) + [unknown]
    row = {name: i for i, name in enumerate(songs)}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(songs) + 1.4), constrained_layout=True)
    for s in truth:
        ax.broken_barh(
            [(s["start_s"], s["end_s"] - s["start_s"])], (row[s["song"] or unknown] - 0.46, 0.44), color="0.6"
        )
    for s in found:
        right = any(
            t["song"] == s["song"] and min(t["end_s"], s["end_s"]) > max(t["start_s"], s["start_s"]) for t in truth
        )
        color = "tab:blue" if s["song"] is None else "tab:green" if right else "tab:red"
        ax.broken_barh(
            [(s["start_s"], s["end_s"] - s["start_s"])], (row[s["song"] or unknown] + 0.02, 0.44), color=color
        )
    ax.set_yticks(range(len(songs)), songs, fontsize=8)
    ax.set_ylim(-0.6, len(songs) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("time in the recording (s)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("0.6", "tab:green", "tab:red", "tab:blue")]
    labels = ["truth", "found, right song", "found, wrong song", "found, unknown"]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title or "every song of the recording: truth above, found below", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def show_segments(wav: np.ndarray, found: Sequence, sr: int = audio.SR, n: int = 3) -> None:
    """Print every segment found in a recording (:class:`fplib.segments.Segment`), then a player for each of
    the first ``n`` songs found, cut from the recording where it was found."""
    for s in found:
        print(s)
    for s in [s for s in found if s.song is not None][:n]:
        print(f"{s.song}, found from {s.start_s:.1f} s to {s.end_s:.1f} s of the recording:")
        display(player(wav[int(s.start_s * sr) : int(s.end_s * sr)], sr))
