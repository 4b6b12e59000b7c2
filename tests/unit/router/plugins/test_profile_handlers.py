"""Profile handlers and deciders: the profiles each handler asks for, round by round, given
fake profile results; what it routes; the sidecar headers; references and parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import pytest

from llmd_router.config import ConfigError
from llmd_router.datalayer.endpoints import Endpoint
from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.framework import (
    PREFIX_MATCH,
    TOKENIZED_PROMPT,
    CycleState,
    Decider,
    NoParams,
    PluginHandle,
    PrefixMatch,
    ProfileHandler,
    ProfileResult,
    RequestOutputs,
    SchedulingError,
    SchedulingResult,
    Stability,
)
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.plugins.deciders.always_disagg_multimodal_decider import (
    AlwaysDisaggMultimodalDecider,
)
from llmd_router.plugins.deciders.always_disagg_pd_decider import (
    AlwaysDisaggPDDecider,
)
from llmd_router.plugins.deciders.prefix_based_pd_decider import (
    PrefixBasedPDDecider,
    prompt_tokens,
)
from llmd_router.plugins.profilehandlers.disagg_profile_handler import (
    ENCODERS_HEADER,
    PREFILLER_HEADER,
    DisaggProfileHandler,
)
from llmd_router.plugins.profilehandlers.single_profile_handler import (
    SingleProfileHandler,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

DEC = Endpoint("dec", "10.0.0.1", 8000)
DEC2 = Endpoint("dec2", "10.0.0.2", 8000)
PRE = Endpoint("pre", "10.0.1.1", 8001)
ENC1 = Endpoint("enc1", "10.0.2.1", 8002)
ENC2 = Endpoint("enc2", "fd00::7", 8003)


def chat(messages: list) -> InferenceRequest:
    body = json.dumps({"model": "m", "messages": messages}).encode()
    return InferenceRequest(
        "r1", "/v1/chat/completions", ApiKind.CHAT_COMPLETIONS, {}, body, messages=messages
    )


def completion(prompt: object, headers: dict[str, str] | None = None) -> InferenceRequest:
    return InferenceRequest(
        "r1", "/v1/completions", ApiKind.COMPLETIONS, headers or {}, b"", prompt=prompt
    )


@dataclass(frozen=True)
class FakeProfile:
    name: str


@dataclass
class FakeDecider:
    name: str
    answer: bool
    calls: list[Endpoint | None] = field(default_factory=list)

    def decide(self, cycle, request, primary):
        self.calls.append(primary)
        return self.answer


def drive(
    handler: ProfileHandler,
    outcomes: Mapping[str, ProfileResult | None],
    request: InferenceRequest | None = None,
    cycle: CycleState | None = None,
) -> tuple[list[list[str]], dict[str, ProfileResult | None]]:
    """Run the handler as the scheduler does: round by round, each named profile once, a
    profile's result taken from ``outcomes``. Returns the rounds and the results."""
    cycle = cycle or CycleState()
    request = request or completion("hi")
    profiles = {name: FakeProfile(name) for name in outcomes}
    results: dict[str, ProfileResult | None] = {}
    rounds: list[list[str]] = []
    for _ in range(len(profiles) + 2):
        fresh = [
            n for n in handler.pick_profiles(cycle, request, profiles, results) if n not in results
        ]
        if not fresh:
            return rounds, results
        rounds.append(fresh)
        for name in fresh:
            results[name] = outcomes[name]
    raise AssertionError("the handler never stopped naming profiles")


def found(*endpoints: Endpoint) -> ProfileResult:
    return ProfileResult(endpoints)


# ---------------------------------------------------------------------------- single


def test_single_profile_handler():
    handler = SingleProfileHandler("h", NoParams())
    assert handler.TYPE == "single-profile-handler"
    assert handler.STABILITY is Stability.BETA
    rounds, results = drive(handler, {"default": found(DEC, DEC2)})
    assert rounds == [["default"]]
    outcome = handler.process_results(CycleState(), completion("x"), results)
    assert outcome.primary == "default"
    assert outcome.targets == (DEC, DEC2)


def test_single_profile_handler_failures():
    handler = SingleProfileHandler("h", NoParams())
    with pytest.raises(SchedulingError, match="failed to run scheduler profile 'default'"):
        handler.process_results(CycleState(), completion("x"), {"default": None})
    with pytest.raises(SchedulingError, match="intended to be used with a single profile"):
        handler.process_results(CycleState(), completion("x"), {"a": found(DEC), "b": found(PRE)})
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"x": 1}, SingleProfileHandler.Params)


# ---------------------------------------------------------------------------- disagg: rounds


def disagg(raw: dict | None = None, **deciders: object) -> DisaggProfileHandler:
    handler = DisaggProfileHandler("pd", msgspec.convert(raw or {}, DisaggProfileHandler.Params))
    handler.bind(PluginHandle(deciders, InFlightLedger()))
    return handler


def test_disagg_identity():
    assert DisaggProfileHandler.TYPE == "disagg-profile-handler"
    assert DisaggProfileHandler.STABILITY is Stability.BETA


def test_decode_first_prefill_approved_encode_refused():
    enc, pre = FakeDecider("enc", False), FakeDecider("pre", True)
    handler = disagg({"deciders": {"prefill": "pre", "encode": "enc"}}, enc=enc, pre=pre)
    outcomes = {"decode": found(DEC, DEC2), "prefill": found(PRE), "encode": found(ENC1)}
    rounds, results = drive(handler, outcomes)
    assert rounds == [["decode"], ["prefill"]]
    assert enc.calls == [DEC]  # asked once, about the first decode endpoint
    assert pre.calls == [DEC]
    outcome = handler.process_results(CycleState(), completion("x"), results)
    assert outcome.primary == "decode"
    assert set(outcome.profiles) == {"decode", "prefill"}
    assert handler.statistics()["prefill-decode"] == 1


def test_decode_first_all_stages():
    handler = disagg(
        {"deciders": {"prefill": "pre", "encode": "enc"}},
        enc=FakeDecider("enc", True),
        pre=FakeDecider("pre", True),
    )
    outcomes = {"encode": found(ENC1), "prefill": found(PRE), "decode": found(DEC)}
    rounds, _ = drive(handler, outcomes)
    assert rounds == [["decode"], ["encode"], ["prefill"]]
    assert handler.statistics() == {
        "decode-only": 0,
        "prefill-decode": 0,
        "encode-decode": 0,
        "encode-prefill-decode": 1,
    }


def test_decode_first_without_deciders_is_decode_only():
    handler = disagg()
    outcomes = {"decode": found(DEC), "prefill": found(PRE), "encode": found(ENC1)}
    rounds, results = drive(handler, outcomes)
    assert rounds == [["decode"]]
    assert set(handler.process_results(CycleState(), completion("x"), results).profiles) == {
        "decode"
    }
    assert handler.statistics()["decode-only"] == 1


def test_decode_first_decode_found_nothing():
    pre = FakeDecider("pre", True)
    handler = disagg({"deciders": {"prefill": "pre"}}, pre=pre)
    rounds, results = drive(handler, {"decode": None, "prefill": found(PRE)})
    assert rounds == [["decode"]]
    assert pre.calls == []
    with pytest.raises(SchedulingError, match="failed to find available decode workers"):
        handler.process_results(CycleState(), completion("x"), results)
    assert sum(handler.statistics().values()) == 0


def test_decode_first_stage_without_a_profile_is_not_asked():
    pre = FakeDecider("pre", True)
    handler = disagg({"deciders": {"prefill": "pre"}}, pre=pre)
    rounds, _ = drive(handler, {"decode": found(DEC)})
    assert rounds == [["decode"]]
    assert pre.calls == []


def test_missing_decode_profile_runs_nothing():
    handler = disagg({"deciders": {"prefill": "pre"}}, pre=FakeDecider("pre", True))
    rounds, results = drive(handler, {"prefill": found(PRE)})
    assert rounds == []
    assert results == {}


def test_custom_profile_names():
    pre = FakeDecider("pre", True)
    handler = disagg(
        {"profiles": {"decode": "d", "prefill": "p"}, "deciders": {"prefill": "pre"}}, pre=pre
    )
    rounds, results = drive(handler, {"d": found(DEC), "p": found(PRE), "decode": found(DEC2)})
    assert rounds == [["d"], ["p"]]
    assert handler.process_results(CycleState(), completion("x"), results).primary == "d"


def test_prefill_failed_still_routes_to_decode():
    handler = disagg({"deciders": {"prefill": "pre"}}, pre=FakeDecider("pre", True))
    rounds, results = drive(handler, {"decode": found(DEC), "prefill": None})
    assert rounds == [["decode"], ["prefill"]]
    outcome = handler.process_results(CycleState(), completion("x"), results)
    assert set(outcome.profiles) == {"decode"}
    assert handler.statistics()["decode-only"] == 1


def test_prefill_first():
    enc = FakeDecider("enc", True)
    handler = disagg({"stageOrder": "prefill-first", "deciders": {"encode": "enc"}}, enc=enc)
    outcomes = {"decode": found(DEC), "prefill": found(PRE), "encode": found(ENC1, ENC2)}
    rounds, results = drive(handler, outcomes)
    assert rounds == [["prefill"], ["encode"], ["decode"]]
    assert enc.calls == [None]  # no endpoint chosen yet, as in llm-d
    assert set(handler.process_results(CycleState(), completion("x"), results).profiles) == {
        "decode",
        "prefill",
        "encode",
    }
    assert handler.statistics()["encode-prefill-decode"] == 1


def test_prefill_first_encode_refused_and_no_prefill_profile():
    enc = FakeDecider("enc", False)
    handler = disagg({"stageOrder": "PrefillFirst", "deciders": {"encode": "enc"}}, enc=enc)
    rounds, _ = drive(handler, {"decode": found(DEC), "encode": found(ENC1)})
    assert rounds == [["decode"]]
    assert enc.calls == [None]


def test_prefill_first_decode_failed():
    handler = disagg({"stageOrder": "prefill"})
    rounds, results = drive(handler, {"decode": None, "prefill": found(PRE)})
    assert rounds == [["prefill"], ["decode"]]
    with pytest.raises(SchedulingError, match="failed to find available decode workers"):
        handler.process_results(CycleState(), completion("x"), results)


# ---------------------------------------------------------------------------- disagg: headers


def headers_after(result: SchedulingResult, client: dict[str, str] | None = None) -> RequestOutputs:
    """The request headers the handler sets and removes (``cycle.outputs``)."""
    cycle = CycleState()
    cycle.outputs.set_header(PREFILLER_HEADER, "stale:1")  # e.g. from an earlier hook
    disagg().pre_request(cycle, completion("x", client), result)
    return cycle.outputs


def test_headers_for_prefill_and_encoders():
    result = SchedulingResult(
        "decode",
        {
            "decode": found(DEC),
            "prefill": found(PRE, DEC2),
            "encode": found(ENC1, ENC2),
        },
    )
    outputs = headers_after(result)
    assert outputs.set_headers == {
        PREFILLER_HEADER: "10.0.1.1:8001",  # the first prefill endpoint only
        ENCODERS_HEADER: "10.0.2.1:8002,[fd00::7]:8003",
    }
    assert outputs.remove_headers == set()


def test_headers_removed_when_no_stage_ran():
    smuggled = {PREFILLER_HEADER: "6.6.6.6:1", ENCODERS_HEADER: "6.6.6.6:2"}
    outputs = headers_after(SchedulingResult("decode", {"decode": found(DEC)}), smuggled)
    assert outputs.set_headers == {}
    assert outputs.remove_headers == {PREFILLER_HEADER, ENCODERS_HEADER}


def test_header_for_prefill_only():
    outputs = headers_after(
        SchedulingResult("decode", {"decode": found(DEC), "prefill": found(PRE)})
    )
    assert outputs.set_headers == {PREFILLER_HEADER: "10.0.1.1:8001"}
    assert outputs.remove_headers == {ENCODERS_HEADER}


def test_headers_follow_custom_profile_names():
    handler = disagg({"profiles": {"prefill": "p", "encode": "e"}})
    request = completion("x")
    result = SchedulingResult(
        "decode", {"decode": found(DEC), "prefill": found(DEC2), "p": found(PRE), "e": found(ENC1)}
    )
    cycle = CycleState()
    handler.pre_request(cycle, request, result)
    assert cycle.outputs.set_headers == {
        PREFILLER_HEADER: "10.0.1.1:8001",
        ENCODERS_HEADER: "10.0.2.1:8002",
    }


# ---------------------------------------------------------------------------- disagg: config


def test_bind_reports_missing_and_wrong_deciders():
    handler = DisaggProfileHandler(
        "my-handler",
        msgspec.convert({"deciders": {"prefill": "nope"}}, DisaggProfileHandler.Params),
    )
    with pytest.raises(ConfigError, match=r"'my-handler'.*deciders\.prefill.*'nope'"):
        handler.bind(PluginHandle({"my-handler": handler}, InFlightLedger()))
    handler = DisaggProfileHandler(
        "my-handler", msgspec.convert({"deciders": {"encode": "f"}}, DisaggProfileHandler.Params)
    )
    with pytest.raises(ConfigError, match=r"deciders\.encode: plugin 'f' is not a decider"):
        handler.bind(PluginHandle({"f": SingleProfileHandler("f", NoParams())}, InFlightLedger()))


def test_legacy_flat_parameters():
    pre = FakeDecider("pre", True)
    handler = disagg(
        {"decodeProfile": "d", "prefillProfile": "p", "deciderPluginName": "pre"}, pre=pre
    )
    rounds, _ = drive(handler, {"d": found(DEC), "p": found(PRE)})
    assert rounds == [["d"], ["p"]]
    stages = msgspec.convert(
        {"prefillDeciderPluginName": "a", "deciderPluginName": "b", "encodeDeciderPluginName": "c"},
        DisaggProfileHandler.Params,
    ).stages()
    assert (stages.prefill_decider, stages.encode_decider) == ("a", "c")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"profiles": {"decode": "d"}, "prefillProfile": "p"}, "prefillProfile: use one format"),
        ({"deciders": {}, "deciderPluginName": "x"}, "use one format exclusively"),
        ({"stageOrder": "sideways"}, "stageOrder: invalid stage order 'sideways'"),
        ({"stageOrder": "prefill-first", "deciders": {"prefill": "x"}}, "deciders.prefill"),
        ({"stageOrder": "prefill_first", "deciderPluginName": "x"}, "prefill decider"),
        ({"profiles": {"decoder": "d"}}, "decoder"),
        ({"primaryPort": 8000}, "primaryPort"),
    ],
)
def test_disagg_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, DisaggProfileHandler.Params)


@pytest.mark.parametrize(
    ("spelling", "order"),
    [
        ("", "decode-first"),
        ("decode-first", "decode-first"),
        ("Decode_First", "decode-first"),
        ("decode", "decode-first"),
        ("prefill-first", "prefill-first"),
        ("PREFILLFIRST", "prefill-first"),
        ("prefill", "prefill-first"),
    ],
)
def test_stage_order_spellings(spelling, order):
    params = msgspec.convert({"stageOrder": spelling}, DisaggProfileHandler.Params)
    assert params.stages().order == order


# ---------------------------------------------------------------------------- deciders


def with_match(endpoint: Endpoint, blocks: int, block_size: int = 16) -> CycleState:
    cycle = CycleState()
    cycle.put(PREFIX_MATCH, {endpoint.key: PrefixMatch(blocks, 100, block_size)})
    return cycle


def prefix_decider(raw: dict) -> PrefixBasedPDDecider:
    return PrefixBasedPDDecider("d", msgspec.convert(raw, PrefixBasedPDDecider.Params))


P400 = "x" * 1600  # 1600 bytes = 400 tokens


@pytest.mark.parametrize(
    ("params", "blocks", "expected"),
    [
        ({"nonCachedTokens": 0}, 0, False),  # off
        ({"nonCachedTokens": 100}, 0, True),  # 400 uncached >= 100
        ({"nonCachedTokens": 100}, 18, True),  # 400 - 288 = 112 >= 100
        ({"nonCachedTokens": 100}, 19, False),  # 400 - 304 = 96 < 100
        ({"nonCachedTokens": 400}, 0, True),  # exactly the threshold
        ({"nonCachedTokens": 401}, 0, False),  # prompt shorter than the threshold
        ({"nonCachedTokens": 100, "promptTokens": 400}, 0, True),
        ({"nonCachedTokens": 100, "promptTokens": 401}, 0, False),  # below the prompt gate
        ({"nonCachedTokens": 100}, None, False),  # no prefix data for the decode endpoint
    ],
)
def test_prefix_based_decider(params, blocks, expected):
    cycle = CycleState() if blocks is None else with_match(DEC, blocks)
    assert prefix_decider(params).decide(cycle, completion(P400), DEC) is expected


def test_prefix_based_decider_reads_the_decode_endpoint_only():
    decider = prefix_decider({"nonCachedTokens": 100})
    cycle = with_match(DEC2, 25)  # DEC2 has it all cached, DEC nothing
    assert decider.decide(cycle, completion(P400), DEC2) is False
    assert decider.decide(cycle, completion(P400), DEC) is False  # no entry for DEC
    assert decider.decide(with_match(DEC, 0), completion(P400), None) is False


def test_prefix_based_decider_identity_and_errors():
    assert PrefixBasedPDDecider.TYPE == "prefix-based-pd-decider"
    assert PrefixBasedPDDecider.consumes == (PREFIX_MATCH, TOKENIZED_PROMPT)
    assert isinstance(prefix_decider({}), Decider)
    with pytest.raises(msgspec.ValidationError, match="nonCachedTokens: must be >= 0"):
        msgspec.convert({"nonCachedTokens": -1}, PrefixBasedPDDecider.Params)
    with pytest.raises(msgspec.ValidationError, match="promptTokens: must be >= 0"):
        msgspec.convert({"promptTokens": -1}, PrefixBasedPDDecider.Params)


@pytest.mark.parametrize(
    ("request_", "tokens"),
    [
        (completion("abcd"), 1),
        (completion("abcde"), 2),  # rounded up
        (completion("é"), 1),  # bytes, not characters: 2 bytes
        (completion(["abcde", "abc"]), 3),  # each string on its own: 2 + 1
        (completion([1, 2, 3, 4, 5]), 5),  # token ids as given
        (completion(None), 0),
        (chat([{"role": "user", "content": "hello"}]), 3),  # "user" + "hello" = 9 bytes
        (
            chat(
                [
                    {"role": "system", "content": "be brief"},  # 6 + 8
                    {
                        "role": "user",  # 4
                        "content": [
                            {"type": "text", "text": "look"},  # 4
                            {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                        ],
                    },
                ]
            ),
            7,  # 22 bytes, aligned to 24, and the image's placeholder token, as llm-d counts it
        ),
    ],
)
def test_prompt_token_estimate(request_, tokens):
    assert prompt_tokens(request_) == tokens


def test_prompt_token_estimate_other_apis():
    responses = InferenceRequest("r", "/v1/responses", ApiKind.RESPONSES, {}, b"", prompt="hi")
    assert prompt_tokens(responses) == 4  # [{"input":"hi"}] is 16 bytes
    embeddings = InferenceRequest(
        "r", "/v1/embeddings", ApiKind.EMBEDDINGS, {}, b"", prompt=["ab", "cd"]
    )
    assert prompt_tokens(embeddings) == 3  # ["ab","cd"] is 11 bytes
    passthrough = InferenceRequest("r", "/x", ApiKind.PASSTHROUGH, {}, b"{}")
    assert prompt_tokens(passthrough) == 0


def test_always_disagg_pd_decider():
    decider = AlwaysDisaggPDDecider("a", NoParams())
    assert decider.TYPE == "always-disagg-pd-decider"
    assert decider.decide(CycleState(), completion("x"), DEC) is True
    assert isinstance(decider, Decider)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "describe a cat"}], False),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], False),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}], True),
        ([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "u"}}]}], True),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], True),
        ([{"role": "user", "content": [{"type": "audio_url", "audio_url": {}}]}], True),
        (
            [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text"}, {"type": "image_url"}]},
            ],
            True,
        ),
        ([{"role": "user", "content": [{"type": "file"}]}], False),
        ([{"role": "user", "content": None}], False),
    ],
)
def test_always_disagg_multimodal_decider(messages, expected):
    decider = AlwaysDisaggMultimodalDecider("m", NoParams())
    assert decider.decide(CycleState(), chat(messages), DEC) is expected


def test_multimodal_decider_ignores_non_chat_requests():
    decider = AlwaysDisaggMultimodalDecider("m", NoParams())
    assert decider.TYPE == "always-disagg-multimodal-decider"
    assert decider.decide(CycleState(), completion("image_url"), None) is False


def test_handler_with_real_deciders():
    """The pd-epp-config.yaml wiring: prefix decider on prefill, multimodal on encode."""
    prefix = prefix_decider({"nonCachedTokens": 100})
    handler = disagg(
        {"deciders": {"prefill": "prefix", "encode": "mm"}},
        prefix=prefix,
        mm=AlwaysDisaggMultimodalDecider("mm", NoParams()),
    )
    long_text = chat([{"role": "user", "content": "y" * 2000}])
    outcomes = {"decode": found(DEC), "prefill": found(PRE), "encode": found(ENC1)}
    assert drive(handler, outcomes, long_text, with_match(DEC, 0))[0] == [["decode"], ["prefill"]]
    assert drive(handler, outcomes, long_text, with_match(DEC, 120))[0] == [["decode"]]
    image = chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}])
    assert drive(handler, outcomes, image, with_match(DEC, 0))[0] == [["decode"], ["encode"]]
