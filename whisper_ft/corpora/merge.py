"""Several manifests → one manifest file, filtered by duration, ids kept unique.

prepare_merge(manifests, out)   as deepspeech.pytorch's merge_manifests
"""

import os
from collections import Counter
from pathlib import Path

from whisper_ft.audio import AudioError, audio_duration_s
from whisper_ft.corpora.common import N_EXAMPLES, Skipped, check_target, count_line, fill_target
from whisper_ft.manifest import (
    ManifestError,
    Target,
    Utterance,
    path_ids,
    read_lines,
    write_manifest,
)


def prepare_merge(
    manifests: list[str | Path],
    out: str | Path,
    *,
    min_duration_s: float | None = None,
    max_duration_s: float | None = None,
    target: Target | None = None,
) -> dict[str, Path]:
    """Merge manifests into one manifest file `out` (`.jsonl`), line after line, in order.

    - Relative audio paths are rewritten to start from `out`'s folder; absolute ones stay.
    - A line without a duration gets it from its audio header. Kept: lines with
      `min_duration_s <= duration <= max_duration_s` (None: no bound), as deepspeech.pytorch's
      merge_manifests does.
    - Ids stay unique: an id an earlier line holds is prefixed with its manifest's name,
      `<stem>_<id>` (parent folders join the name where stems repeat: a/train.jsonl and
      b/train.jsonl are a_train and b_train). Each rename is reported; ValueError if the new
      id is taken too.
    - `target`: None keeps every line's fields (manifests made for different targets are an
      error); "kana" fills the kana of lines that have none and records kana on every line;
      "text" records text.
    Lines that cannot be used (malformed, audio missing or unreadable, an id repeated within
    its manifest) are skipped and reported. Returns {out's stem: out}.
    """
    if target is not None:
        check_target(target)
    out = Path(os.path.abspath(out))
    if out.suffix != ".jsonl" or out.is_dir():
        raise ValueError(
            f"{out}: merge writes one manifest file; give `out` a .jsonl path, e.g. "
            "data/merged.jsonl."
        )
    inputs = [Path(os.path.abspath(m)) for m in manifests]
    if not inputs:
        raise ValueError("merge needs at least one manifest.")
    twice = sorted(str(p) for p, n in Counter(inputs).items() if n > 1)
    if twice:
        raise ValueError(f"{', '.join(twice)} named more than once; name each manifest once.")
    if out in inputs:
        raise ValueError(f"{out} is one of the manifests to merge; write the merge elsewhere.")
    for manifest in inputs:
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no such manifest.")

    skipped = Skipped()
    renamed: list[str] = []  # "old → new (file:line)" per id an earlier line held
    dropped: Counter[str] = Counter()
    merged: list[Utterance] = []
    taken: set[str] = set()
    first_of_target: dict[str, str] = {}  # target → the first line made for it
    for manifest, label in zip(inputs, path_ids(inputs), strict=True):
        own: set[str] = set()
        for where, u in read_lines(manifest):
            if isinstance(u, ManifestError):  # the message names the line and what is wrong
                skipped.add(f"bad line ({u.reason})", str(u))
                continue
            if u.id in own:
                skipped.add("id repeated within its manifest", where)
                continue
            own.add(u.id)
            audio = Path(os.path.abspath(u.audio_path(manifest.parent)))
            if not audio.is_file():
                skipped.add("audio file missing", where)
                continue
            if u.duration is None:
                try:
                    u.duration = round(audio_duration_s(audio), 3)
                except AudioError:
                    skipped.add("audio file unreadable", where)
                    continue
            if min_duration_s is not None and u.duration < min_duration_s:
                dropped[f"shorter than {min_duration_s:g} s"] += 1
                continue
            if max_duration_s is not None and u.duration > max_duration_s:
                dropped[f"longer than {max_duration_s:g} s"] += 1
                continue
            if u.id in taken:
                new_id = f"{label}_{u.id}"
                if new_id in taken:
                    raise ValueError(
                        f"{where}: id {u.id!r} is taken by an earlier line, and so is "
                        f"{new_id!r}; rename one of them."
                    )
                renamed.append(f"{u.id} → {new_id} ({where})")
                u.id = new_id
            taken.add(u.id)
            if not Path(u.audio).is_absolute():
                u.audio = Path(os.path.relpath(audio, out.parent)).as_posix()
            if u.target is not None:
                first_of_target.setdefault(u.target, where)
            merged.append(u)

    if target is None and len(first_of_target) > 1:
        made = "; ".join(f"{t} (e.g. {where})" for t, where in sorted(first_of_target.items()))
        raise ValueError(
            f"the manifests were made for different targets: {made}. Pass `target` kana "
            "(fills the missing kana) or `target` text to merge them for one."
        )
    if target is not None:
        without_kana = [u for u in merged if target == "kana" and u.kana is None]
        filled = {u.id for u in fill_target(without_kana, target, skipped)}
        lost = {u.id for u in without_kana} - filled
        merged = [u for u in merged if u.id not in lost]
        for u in merged:
            u.target = target
    if not merged:
        lines = [*skipped.lines(), count_line("dropped by duration", dropped)]
        raise ValueError("no line left to merge, nothing written.\n" + "\n".join(lines))

    write_manifest(out, merged)
    speakers = {u.speaker for u in merged if u.speaker is not None}
    hours = sum(u.duration or 0.0 for u in merged) / 3600
    print(
        f"prepare merge: {len(merged)} utterances {len(speakers)} speakers {hours:.2f} h from "
        f"{len(inputs)} manifests → {out}"
    )
    if renamed:
        examples = "; ".join(renamed[:N_EXAMPLES])
        print(f"  renamed: {len(renamed)} ids an earlier line holds, e.g. {examples}")
    print("\n".join([*skipped.lines(), count_line("dropped by duration", dropped)]))
    return {out.stem: out}
