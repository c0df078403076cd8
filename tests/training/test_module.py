import csv
import json
import math
import warnings

import jiwer
import pytest
import torch
import whisper

from whisper_ft.audio import log_mel_batch
from whisper_ft.data.collate import Collator
from whisper_ft.data.datamodule import WhisperDataModule
from whisper_ft.data.dataset import UtteranceDataset
from whisper_ft.data.feature_cache import encoder_stem
from whisper_ft.decoding import budgets_for
from whisper_ft.evaluation.metrics import has_loop
from whisper_ft.models.export import export_model
from whisper_ft.training.module import (
    WhisperFineTuner,
    decay_parameter_names,
    token_loss,
    warmup_then_linear_decay,
)


def data(corpus, **kwargs) -> WhisperDataModule:
    manifests = {f"{split}_manifest": str(path) for split, path in corpus.items()}
    return WhisperDataModule(**(manifests | {"batch_size": 4, "num_workers": 0} | kwargs))


def test_token_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 10)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    expected = torch.nn.functional.cross_entropy(
        torch.stack([logits[0, 0], logits[0, 1], logits[1, 0]]), torch.tensor([1, 2, 3])
    )
    torch.testing.assert_close(token_loss(logits, labels), expected)


def test_no_weight_decay_on_whisper_biases_and_layer_norms(micro):
    decay, no_decay = decay_parameter_names(micro.model)
    for name in (
        "decoder.ln.weight",
        "decoder.blocks.0.attn_ln.weight",
        "decoder.blocks.1.cross_attn_ln.bias",
        "decoder.blocks.0.mlp.0.bias",
        "decoder.blocks.0.attn.query.bias",
    ):
        assert name in no_decay
    for name in (
        "decoder.token_embedding.weight",
        "decoder.positional_embedding",
        "decoder.blocks.0.attn.query.weight",
        "decoder.blocks.0.mlp.2.weight",
    ):
        assert name in decay
    trainable = {n for n, p in micro.model.named_parameters() if p.requires_grad}
    assert set(decay) | set(no_decay) == trainable and not set(decay) & set(no_decay)
    assert not any(n.startswith("encoder.") for n in trainable)  # frozen: not optimised at all


def test_warmup_then_linear_decay():
    factors = [warmup_then_linear_decay(s, 2, 10) for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[-1] == pytest.approx(1 / 8) and all(
        a >= b for a, b in zip(factors[1:], factors[2:], strict=False)
    )


def test_a_training_step_changes_the_decoder_only(micro, corpus, make_trainer):
    before = {k: v.clone() for k, v in micro.model.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(max_steps=1, limit_val_batches=0).fit(micro, data(corpus))
    assert not [w for w in caught if "in eval mode" in str(w.message)]  # on purpose: no warning
    after = micro.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    changed = [
        k for k in before if k.startswith("decoder.") and not torch.equal(before[k], after[k])
    ]
    assert (
        "decoder.token_embedding.weight" in changed and "decoder.blocks.1.mlp.2.weight" in changed
    )
    assert not micro.model.encoder.training  # Lightning's train() did not wake the encoder


@pytest.mark.parametrize("micro", [{"freeze_encoder": False}], indirect=True)
def test_full_fine_tuning_changes_the_encoder_too(micro, corpus, make_trainer):
    before = micro.model.encoder.conv1.weight.clone()
    make_trainer(max_steps=1, limit_val_batches=0).fit(micro, data(corpus))
    assert not torch.equal(before, micro.model.encoder.conv1.weight)
    assert micro.model.encoder.training


def test_overfitting_four_utterances_drives_the_loss_down(micro, corpus):
    dataset = UtteranceDataset.from_manifest(corpus["train"], micro.tokenizer)
    batch = Collator(micro.tokenizer.eot)([dataset[i] for i in range(4)])
    optimizer = torch.optim.AdamW([p for p in micro.parameters() if p.requires_grad], lr=3e-3)
    micro.train()
    losses = []
    for _ in range(80):  # measured: 10.83 → 0.49 (22×) in ~12 s on 2 cores
        loss = token_loss(micro(batch["audio"], batch["dec_input_ids"]), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(51865), abs=0.5)
    assert losses[-1] < losses[0] / 10, losses


def test_test_writes_predictions_and_corpus_cer_matching_jiwer(
    micro, corpus, tmp_path, make_trainer
):
    run = make_trainer()
    [logged] = run.test(micro, data(corpus), verbose=False)
    log_dir = tmp_path / "lightning_logs" / "version_0"
    metrics = json.loads((log_dir / "metrics.json").read_text())
    with (log_dir / "predictions.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    n_test = sum(1 for line in corpus["test"].read_text().splitlines() if line.strip())
    assert len(rows) == metrics["n_utterances"] == n_test
    recomputed = jiwer.cer([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    assert metrics["cer"] == pytest.approx(recomputed)
    assert logged["test_cer"] == pytest.approx(recomputed)
    assert all(r["reference"] and "。" not in r["reference"] for r in rows)  # as scored
    assert {"wer", "wer_meaning", "base_model"} <= metrics.keys()
    # kana targets: kana CER is the primary rate; morae scored too; no orthography to compare
    assert metrics["kana_cer"] == metrics["cer"] and 0 < metrics["morae"] < metrics["kana_chars"]
    assert metrics["ortho_cer"] is None and metrics["n_text_utterances"] == 0
    assert metrics["excluded_by_data_check"] == 0 and metrics["skipped_unreadable_audio"] == 0
    assert logged["test_mora_er"] == pytest.approx(metrics["mora_er"])
    manifest = [json.loads(line) for line in corpus["test"].read_text().splitlines()]
    assert {r["id"]: r["speaker"] for r in rows} == {u["id"]: u["speaker"] for u in manifest}
    assert metrics["checkpoint"] is None  # tested in memory: no fit run to take curves from
    # the looping signs of each row: budget hit, a repeated unit, the insertions among its edits
    for r in rows:
        assert r["hit_budget"] in ("0", "1") and r["loop"] in ("0", "1")
        assert int(r["insertions"]) <= len(r["hypothesis"])
        assert r["loop"] == str(int(has_loop(r["hypothesis"])))
    # what it says where nobody speaks, on each speechless clip
    assert set(metrics["speechless"]) == {"silence", "white_noise", "pink_noise"}
    said = sum(bool(t.strip()) for t in metrics["speechless"].values()) / 3
    assert metrics["speechless_said_rate"] == pytest.approx(said)
    assert logged["test_speechless_said_rate"] == pytest.approx(said)


@pytest.mark.parametrize("micro", [{"kana_decoding": True}], indirect=True)
def test_kana_decoding_writes_katakana_only(micro, corpus, tmp_path, make_trainer):
    [logged] = make_trainer().test(micro, data(corpus), verbose=False)
    log_dir = tmp_path / "lightning_logs" / "version_0"
    with (log_dir / "predictions.tsv").open(encoding="utf-8") as f:
        hypotheses = "".join(r["hypothesis"] for r in csv.DictReader(f, delimiter="\t"))
    assert hypotheses  # a random model says something: only katakana (and a cut-off byte: �)
    assert all("\u30a0" <= c <= "\u30ff" or c == "\ufffd" for c in hypotheses), hypotheses
    assert logged["test_pipeline_kana_cer"] >= 0


@pytest.mark.parametrize("micro", [{"spec_augment": {"prob": 1.0}}], indirect=True)
def test_spec_augment_masks_training_features_only(micro, corpus):
    dataset = UtteranceDataset.from_manifest(corpus["train"], micro.tokenizer)
    batch = Collator(micro.tokenizer.eot)([dataset[i] for i in range(2)])
    plain = micro.encode(batch["audio"])
    augmented = micro.encode(batch["audio"], batch["audio_lengths"], augment=True)
    assert not torch.equal(plain, augmented)
    torch.testing.assert_close(micro.encode(batch["audio"], batch["audio_lengths"]), plain)
    assert micro.hparams.spec_augment["prob"] == 1.0  # a plain dict in checkpoints


def test_validation_decodes_every_nth_run(micro, corpus, make_trainer):
    micro.hparams.decode_every_n_val = 2
    run = make_trainer()
    first = run.validate(micro, data(corpus), verbose=False)[0]
    second = run.validate(micro, data(corpus), verbose=False)[0]
    assert "val_cer" in first and "val_loss" in first
    assert "val_cer" not in second and second["val_loss"] == pytest.approx(first["val_loss"])


def test_compile_decoder_compiles_training_steps_only(monkeypatch, corpus):
    import pytorch_lightning as pl

    from whisper_ft.training.module import WhisperFineTuner

    compiled, calls = [], []

    def fake_compile(module):
        compiled.append(module)

        def stand_in(*args):  # what the compiled decoder computes: the module's output
            calls.append(args)
            return module(*args)

        return stand_in

    monkeypatch.setattr(torch, "compile", fake_compile)
    pl.seed_everything(0, verbose=False)
    tuner = WhisperFineTuner(base_model="random:micro", compile_decoder=True)
    assert compiled == [tuner.model.decoder] and tuner.train_decoder is not tuner.model.decoder
    # no second copy of the decoder in the state dict (checkpoints, export)
    assert not any("_orig_mod" in key for key in tuner.state_dict())
    assert "train_decoder" not in dict(tuner.named_modules())
    dataset = UtteranceDataset.from_manifest(corpus["train"], tuner.tokenizer)
    batch = Collator(tuner.tokenizer.eot)([dataset[i] for i in range(2)])
    assert torch.isfinite(tuner.training_step(batch, 0)) and len(calls) == 1
    tuner._evaluate(batch, "val", decode=True)  # loss and decoding run the eager decoder
    assert len(calls) == 1


def test_adamw_uses_the_fused_kernel_and_updates_as_the_default_does():
    from whisper_ft.training.module import adamw

    torch.manual_seed(0)
    weights = [torch.randn(8, 4, requires_grad=True) for _ in range(2)]
    copies = [w.detach().clone().requires_grad_() for w in weights]
    fused = adamw([{"params": weights, "weight_decay": 0.01}], lr=1e-2)
    plain = torch.optim.AdamW([{"params": copies, "weight_decay": 0.01}], lr=1e-2)
    assert fused.defaults["fused"] is True  # CPU has a fused AdamW from torch 2.4
    for _ in range(3):
        for w, c in zip(weights, copies, strict=True):
            w.grad = c.grad = torch.randn(8, 4)
        fused.step()
        plain.step()
    for w, c in zip(weights, copies, strict=True):
        torch.testing.assert_close(w, c)


def test_a_resumed_fit_keeps_the_decode_every_n_val_schedule(micro):
    from whisper_ft.training.module import WhisperFineTuner

    micro._val_runs = 5  # five validations ran before the checkpoint
    checkpoint: dict = {}
    micro.on_save_checkpoint(checkpoint)
    resumed = WhisperFineTuner("random:micro", decode_every_n_val=2)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed._val_runs == 5 and checkpoint["whisper_dims"]["n_text_ctx"] == 448
    resumed.on_load_checkpoint({})  # a checkpoint from before: the schedule starts over
    assert resumed._val_runs == 0


def test_best_checkpoints_come_only_from_validations_that_decoded(
    micro, corpus, make_trainer, tmp_path
):
    """Decoding every 2nd validation: Lightning keeps the last val_cer in callback_metrics, so
    a checkpoint named with that old CER used to be written after each validation that did not
    decode, and `best` could pick weights nobody had decoded."""
    from whisper_ft.training.checkpointing import BestCheckpoint

    micro.hparams.decode_every_n_val = 2
    folder = tmp_path / "best"
    run = make_trainer(
        max_steps=6,
        val_check_interval=2,  # not 1: Lightning would then save at the epoch's end only
        enable_checkpointing=True,
        callbacks=[BestCheckpoint(save_top_k=-1, dirpath=folder)],
    )
    run.fit(micro, data(corpus))
    steps = sorted(int(p.name.split("step=")[1].split("-")[0]) for p in folder.glob("*.ckpt"))
    assert steps == [2, 6]  # validations 0 and 2 decoded (after steps 2 and 6); step 4's did not


def test_evaluation_losses_are_averaged_over_processes(micro, corpus, make_trainer, monkeypatch):
    logged = {}
    log = micro.log

    def recording(name, *args, **kwargs):
        logged.setdefault(name, kwargs)
        return log(name, *args, **kwargs)

    monkeypatch.setattr(micro, "log", recording)
    make_trainer().validate(micro, data(corpus), verbose=False)
    make_trainer().test(micro, data(corpus), verbose=False)
    assert logged["val_loss"].get("sync_dist") is True
    assert logged["test_loss"].get("sync_dist") is True


def test_hypotheses_cut_by_the_budget_are_counted(micro, corpus, make_trainer):
    """A random model never emits end-of-text: every test hypothesis runs to the budget."""
    results = make_trainer().test(micro, data(corpus), verbose=False)[0]
    assert results["test_budget_hit_rate"] == 1.0


def test_a_hypothesis_depends_neither_on_its_reference_nor_on_its_batch(micro, corpus):
    """The budget was 1.25 × the batch's longest reference + 8: a longer reference (or a
    longer batch-mate) let the same audio decode to more tokens. It is the audio's own now,
    and the same as `transcribe`'s for the same file."""
    from whisper_ft.audio import load_audio
    from whisper_ft.inference.transcriber import Transcriber

    dataset = UtteranceDataset.from_manifest(corpus["test"], micro.tokenizer)
    collate = Collator(micro.tokenizer.eot)
    micro.eval()
    items = [dataset[i] for i in range(2)]
    long_reference = dict(items[0], text=items[0]["text"] * 6)
    long_reference["tokens"] = [*items[0]["tokens"], *items[0]["tokens"][4:] * 5]
    with torch.no_grad():
        alone = micro._evaluate(collate(items[:1]), "test", decode=True)[0]
        paired = micro._evaluate(collate([items[0], items[1]]), "test", decode=True)[0]
        longer = micro._evaluate(collate([long_reference]), "test", decode=True)[0]
    assert alone.hit_budget  # a random model runs to the budget every time
    assert alone.hypothesis == paired.hypothesis == longer.hypothesis
    transcriber = Transcriber("random:micro", device="cpu")
    audio = [load_audio(u.audio_path(corpus["test"].parent)) for u in dataset.utterances[:2]]
    expected = budgets_for(collate(items)["durations_s"], micro.model.dims.n_text_ctx)
    assert transcriber.budgets(audio) == expected and expected[0] < 224


def test_kl_to_teacher_is_the_mean_kl_over_label_positions():
    from whisper_ft.training.module import kl_to_teacher

    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    keep = [(0, 0), (0, 1), (1, 0)]
    expected = sum(
        (
            teacher[i, j].softmax(-1)
            * (teacher[i, j].log_softmax(-1) - student[i, j].log_softmax(-1))
        )
        .sum()
        .item()
        for i, j in keep
    ) / len(keep)
    assert kl_to_teacher(student, teacher, labels).item() == pytest.approx(expected, rel=1e-5)
    assert kl_to_teacher(teacher, teacher, labels).item() == pytest.approx(0.0, abs=1e-6)
    padded_differently = student.clone()
    padded_differently[0, 2] += 100.0  # a padding position: not counted
    assert kl_to_teacher(padded_differently, teacher, labels) == kl_to_teacher(
        student, teacher, labels
    )


@pytest.mark.parametrize("micro", [{"kl_weight": 0.5}], indirect=True)
def test_kl_weight_keeps_a_frozen_base_decoder_out_of_the_checkpoint(micro, corpus, make_trainer):
    before = {k: v.clone() for k, v in micro.model.decoder.state_dict().items()}
    trainer = make_trainer(max_steps=3, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(micro, data(corpus))
    teacher = micro.teacher.state_dict()
    assert all(torch.equal(before[k], teacher[k]) for k in before)  # the base, untouched
    assert not all(torch.equal(before[k], v) for k, v in micro.model.decoder.state_dict().items())
    assert not any(k.startswith("teacher") for k in micro.state_dict())  # not checkpointed
    assert not any(p.requires_grad for p in micro.teacher.parameters())
    rows = list(csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")))
    kls = [float(r["train_kl"]) for r in rows if r.get("train_kl")]
    assert len(kls) == 3 and kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0


def test_without_kl_weight_no_base_decoder_is_kept(micro, corpus, make_trainer):
    make_trainer(max_steps=1, limit_val_batches=0).fit(micro, data(corpus))
    assert micro.teacher is None


def test_kl_weight_refuses_what_it_cannot_use(micro):
    from whisper_ft.training.module import WhisperFineTuner

    with pytest.raises(ValueError, match="`kl_weight` must be a finite number >= 0"):
        WhisperFineTuner(base_model="random:micro", kl_weight=-1.0)
    micro._loaded_from = "run/last.ckpt"  # as when cli/entry.py resumes a fit from a checkpoint
    with pytest.raises(ValueError, match="random base .* cannot be made again"):
        micro._base_decoder()


@pytest.fixture(scope="module")
def tiny_top1() -> WhisperFineTuner:
    """random:tiny (4 encoder blocks) training its top encoder block (read-only: not trained)."""
    torch.manual_seed(0)
    return WhisperFineTuner(base_model="random:tiny", encoder_top_layers=1)


def test_encoder_top_layers_train_the_top_blocks_ln_post_and_the_decoder_only(tiny_top1):
    trainable = {n for n, p in tiny_top1.model.named_parameters() if p.requires_grad}
    encoder = {n for n in trainable if n.startswith("encoder.")}
    assert encoder == {n for n, _ in tiny_top1.model.named_parameters() if
                       n.startswith(("encoder.blocks.3.", "encoder.ln_post."))}  # fmt: skip
    decoder = {n for n, _ in tiny_top1.model.named_parameters() if n.startswith("decoder.")}
    assert trainable == encoder | decoder and tiny_top1.encoder_first_trained == 3
    tiny_top1.train()
    assert tiny_top1.model.encoder.blocks[3].training and tiny_top1.model.encoder.ln_post.training
    assert not tiny_top1.model.encoder.blocks[2].training


def test_cached_block_inputs_through_the_top_blocks_are_the_encoders_output(tiny_top1):
    torch.manual_seed(1)
    audio = 0.1 * torch.randn(2, whisper.audio.N_SAMPLES)
    mel = log_mel_batch(audio, tiny_top1.model.dims.n_mels)
    with torch.no_grad():
        expected = tiny_top1.model.encoder(mel)
        stem = encoder_stem(tiny_top1.model.encoder, mel, 3)
        got = tiny_top1.features({"features": stem, "features_block": 3})
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tiny_top1.features({"audio": audio}), expected)
    with pytest.raises(ValueError, match="caches the input of block 3"):
        tiny_top1.features({"features": expected})  # encoder output: the top block cannot train


@pytest.mark.parametrize("k", [4, -1])
def test_encoder_top_layers_outside_the_encoder_are_refused_with_the_range(k):
    with pytest.raises(
        ValueError, match=rf"encoder_top_layers={k}: use 0 to 3 \(the encoder has 4"
    ):
        WhisperFineTuner(base_model="random:tiny", encoder_top_layers=k)
    with pytest.raises(ValueError, match="freeze_encoder false trains all of it"):
        WhisperFineTuner(base_model="random:micro", freeze_encoder=False, encoder_top_layers=1)


@pytest.mark.parametrize("micro", [{"encoder_top_layers": 1}], indirect=True)
def test_a_fit_from_the_cache_trains_the_top_encoder_block_and_exports_it(
    micro, corpus, make_trainer, tmp_path
):
    before = {k: v.clone() for k, v in micro.model.state_dict().items()}
    trainer = make_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(micro, data(corpus, feature_cache=str(tmp_path / "features")))
    [meta] = (tmp_path / "features").glob("train-*/meta.json")
    assert json.loads(meta.read_text())["key"]["input_of_block"] == 1  # micro: 2 blocks
    after = micro.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"encoder.blocks.1.mlp.0.weight", "encoder.ln_post.weight"} <= changed
    assert not {k for k in changed if k.startswith(("encoder.blocks.0.", "encoder.conv"))}
    trainer.save_checkpoint(tmp_path / "top.ckpt")
    exported = export_model(str(tmp_path / "top.ckpt"), tmp_path / "top.pt")
    weights = torch.load(exported, weights_only=True)["model_state_dict"]
    torch.testing.assert_close(
        weights["encoder.blocks.1.mlp.0.weight"].float(), after["encoder.blocks.1.mlp.0.weight"]
    )


def english_set(corpus, path):
    """Two of the corpus's clips as a plain-text retention manifest (no espeak-ng needed)."""
    from dataclasses import replace

    from whisper_ft.manifest import read_manifest, write_manifest

    clips = read_manifest(corpus["test"])[:2]
    root = corpus["test"].parent
    english = [
        replace(u, audio=str(u.audio_path(root)), text=text, target="text", kana=None)
        for u, text in zip(clips, ["The bus was late.", "Close the window."], strict=True)
    ]
    return write_manifest(path / "retention_en.jsonl", english)


def test_test_scores_retention_of_the_model_and_its_base_once(
    micro, corpus, tmp_path, make_trainer, monkeypatch
):
    import whisper_ft.training.module as module

    micro.retention_set = english_set(corpus, tmp_path / "retention")
    loads = []
    real_load = module.load_base_model
    monkeypatch.setattr(
        module, "load_base_model", lambda name: loads.append(name) or real_load(name)
    )
    [logged] = make_trainer(limit_test_batches=1).test(micro, data(corpus), verbose=False)
    assert loads == ["random:micro"]  # the base, rebuilt by name, decoded the set
    for name in ("test_retention_wer", "test_retention_base_wer", "test_retention_ratio"):
        assert math.isfinite(logged[name]) or name == "test_retention_ratio"
    assert logged["test_retention_ratio"] == pytest.approx(
        logged["test_retention_wer"] / logged["test_retention_base_wer"]
    )
    log_dir = tmp_path / "lightning_logs" / "version_0"
    kept = json.loads((log_dir / "metrics.json").read_text())["retention"]
    assert kept["utterances"] == 2 and kept["wer_after"] == pytest.approx(
        logged["test_retention_wer"]
    )
    report = (log_dir / "report.md").read_text(encoding="utf-8")
    assert "| language | utterances | WER before | WER after |" in report
    assert f"| en | 2 | {kept['wer_before']:.3f} | {kept['wer_after']:.3f} |" in report
    assert (tmp_path / "retention" / "base_random_micro.json").is_file()

    [again] = make_trainer(limit_test_batches=1).test(micro, data(corpus), verbose=False)
    assert loads == ["random:micro"]  # the base's figure read from its JSON
    assert again["test_retention_base_wer"] == logged["test_retention_base_wer"]


@pytest.mark.parametrize("micro", [{"retention_language": None}], indirect=True)
def test_test_without_retention_language_or_set_logs_no_retention(
    micro, corpus, tmp_path, make_trainer
):
    micro.retention_set = english_set(corpus, tmp_path / "retention")
    [logged] = make_trainer(limit_test_batches=1).test(micro, data(corpus), verbose=False)
    assert not any(name.startswith("test_retention") for name in logged)
    metrics = tmp_path / "lightning_logs" / "version_0" / "metrics.json"
    assert json.loads(metrics.read_text())["retention"] is None
