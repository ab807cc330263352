"""Who holds the floor: the VAD's fast onsets combined with the state head's decisions.

Pure and clock-free (times are passed in), so it is tested on hand-built timelines.

Signals:
- per 20 ms input frame: the transport VAD's segment flag and the frame RMS. A frame is *active*
  when it is inside a VAD segment and louder than ``active_dbfs`` (the VAD's hangover frames
  are quiet, so this tracks the speech itself within ~20 ms);
- per 160 ms chunk: the state head's probabilities (continue, interrupt, reject) on the LLM
  hidden state of the chunk's last position.

Behaviour:
- listening: take the turn when the head says *interrupt* (p >= ``interrupt_threshold``) after
  the user has spoken, on a chunk whose last ``take_turn_min_silence_s`` were inactive. A
  fallback takes it after ``fallback_silence_s`` of silence (0 = off), so an untrained or
  uncertain head never leaves the user hanging (the trigger is recorded with each turn);
- thinking (turn taken, no audio yet): if the user becomes active again, the reply is cancelled
  (a mid-turn pause was mistaken for the end) and the agent keeps listening;
- speaking: an activity onset of ``onset_s`` *pauses* the agent's audio at once (10 ms fade; a
  cheap pre-emption) while the head confirms: *continue* (a real turn; p >= ``bargein_threshold`` on
  ``bargein_confirm_chunks`` chunks in a row) -> barge-in (stop, flush, cancel, listen); *reject*
  (a backchannel, a cough) -> resume where it paused once the sound is over (``hold_on_reject``;
  at once otherwise); the user falling silent for ``resume_after_s`` -> resume; activity summing
  to ``bargein_max_s`` (``reject_max_s`` after a reject) -> barge-in (the VAD's fallback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from configs.schema import TurnPolicyConfig as PolicyConfig

ActionKind = Literal["take_turn", "cancel_reply", "pause_output", "resume_output", "barge_in"]

CONTINUE, INTERRUPT, REJECT = 0, 1, 2


@dataclass
class Action:
    kind: ActionKind
    t: float
    """Input-timeline time (s) of the decision."""
    trigger: str
    """What caused it: state_head | silence_timeout | vad | user_resumed | head_reject | vad_end."""
    detail: dict = field(default_factory=dict)


Mode = Literal["listening", "thinking", "speaking"]


class TurnPolicy:
    def __init__(self, cfg: PolicyConfig | None = None) -> None:
        self.cfg = cfg or PolicyConfig()
        self.active_rms = 10 ** (self.cfg.active_dbfs / 20.0)
        self.mode: Mode = "listening"
        self.user_spoke = False
        """The user has been active since the agent's last turn (a turn to answer exists)."""
        self.active = False
        self.active_run = 0.0
        """Seconds of continuous activity up to now."""
        self.inactive_run = math.inf
        self.last_active_end: float | None = None
        """Input time at which the user's most recent activity ended."""
        self.candidate_start: float | None = None
        """Start of the current candidate barge-in (agent paused), else None."""
        self.candidate_active = 0.0
        """Seconds of activity since the candidate started (short gaps do not end a candidate)."""
        self.candidate_rejected = False
        """The head said *reject* during the current candidate (it waits for the sound to end)."""
        self.resumed: tuple[float, float, bool] | None = None
        """(time, activity, rejected) of the last resume: a sound that starts again within
        ``resume_after_s`` continues the same run (a pause between words of a real turn)."""
        self.activity_in_chunk = False
        self.dismissed = False
        """The head rejected the current run of activity: it neither pauses the agent nor times out."""
        self.continue_run = 0
        """Chunks in a row on which the head said *continue* while the agent spoke (see on_chunk)."""
        self.loud_since: float | None = None
        """Start of the current run of loud frames: the VAD flag rises ~60 ms after the speech does,
        the energy does not, so onsets are dated by the energy."""
        self.now = 0.0

    # -- agent state -------------------------------------------------------------------------
    def agent_thinking(self) -> None:
        self.mode = "thinking"

    def agent_speaking(self) -> None:
        if self.mode == "thinking":
            self.mode = "speaking"

    def agent_done(self) -> None:
        """The reply finished playing: a new user turn is needed before the next one."""
        self.mode = "listening"
        self.candidate_start = None
        self.resumed = None
        self.user_spoke = self.active
        self.continue_run = 0

    # -- inputs ------------------------------------------------------------------------------
    def on_frame(self, t_end: float, duration: float, speech: bool | None, rms: float) -> list[Action]:
        """One input frame ending at ``t_end`` (input timeline)."""
        self.now = t_end
        loud = rms >= self.active_rms
        active = bool(speech) and loud if speech is not None else loud
        if not loud:
            self.loud_since = None
        elif self.loud_since is None:
            self.loud_since = t_end - duration
        actions: list[Action] = []
        if active:
            self.active_run = self.active_run + duration if self.active else duration
            self.inactive_run = 0.0
            self.activity_in_chunk = True
        else:
            if self.active:
                self.last_active_end = t_end - duration
            self.dismissed = False
            self.inactive_run = self.inactive_run + duration if not self.active else duration
            self.active_run = 0.0
        self.active = active
        c = self.cfg
        if self.mode == "listening":
            if active and self.active_run >= c.onset_s:
                self.user_spoke = True
            if (self.user_spoke and c.fallback_silence_s > 0 and not active
                    and self.inactive_run >= c.fallback_silence_s - 1e-9):
                actions.append(self._take_turn(t_end, "silence_timeout"))
        elif self.mode == "thinking":
            if active and self.active_run >= c.onset_s:
                self.mode = "listening"
                self.user_spoke = True
                actions.append(Action("cancel_reply", t_end, "user_resumed"))
        elif self.mode == "speaking":
            if self.candidate_start is None:
                if active and self.active_run >= c.onset_s and not self.dismissed:
                    self.candidate_start = self._onset(t_end)
                    self.candidate_active = self.active_run
                    self.candidate_rejected = False
                    if self.resumed is not None and self.candidate_start - self.resumed[0] <= c.resume_after_s + 1e-9:
                        self.candidate_active += self.resumed[1]
                        self.candidate_rejected = self.resumed[2]
                    if c.duck_on_vad:
                        actions.append(Action("pause_output", t_end, "vad"))
            else:
                if active:
                    self.candidate_active += duration
                limit = c.reject_max_s if self.candidate_rejected else c.bargein_max_s
                if active and self.candidate_active >= limit - 1e-9:
                    actions.append(self._barge_in(t_end, "vad_long"))
                elif not active and self.inactive_run >= c.resume_after_s - 1e-9:
                    actions.append(self._resume(t_end, "vad_end"))
        return actions

    def on_chunk(self, t_end: float, probs: tuple[float, float, float] | list[float]) -> list[Action]:
        """The state head's probabilities for the chunk ending at ``t_end``."""
        p_cont, p_int, p_rej = (float(x) for x in probs)
        had_activity = self.activity_in_chunk
        self.activity_in_chunk = self.active
        c = self.cfg
        if self.mode == "listening":
            if (self.user_spoke and p_int >= c.interrupt_threshold and not self.active
                    and self.inactive_run >= c.take_turn_min_silence_s - 1e-9):
                return [self._take_turn(t_end, "state_head", p=p_int)]
            return []
        if self.mode != "speaking":
            return []
        # The head's first verdicts on a sound cannot tell "okay." from "okay, but ...": one chunk of
        # *continue* cut the reply on 9 of the 20 backchannels of `bench duplex` (6 of them between
        # *reject*s). The VAD has paused the agent already, so a barge-in can wait for a second one.
        confirmed = p_cont >= c.bargein_threshold and (had_activity or self.continue_run > 0)
        self.continue_run = self.continue_run + 1 if confirmed else 0
        if self.candidate_start is not None:
            if self.continue_run >= c.bargein_confirm_chunks:
                return [self._barge_in(t_end, "state_head", p=p_cont)]
            if p_rej >= c.reject_threshold:
                if c.hold_on_reject:
                    # Resumes when the sound is over (vad_end); a gap between words at the chunk's
                    # end is not the end of it.
                    self.candidate_rejected = True
                    return []
                return [self._resume(t_end, "head_reject", p=p_rej)]
            return []
        if self.continue_run >= c.bargein_confirm_chunks:
            return [self._barge_in(t_end, "state_head", p=p_cont)]
        return []

    # -- transitions -------------------------------------------------------------------------
    def _take_turn(self, t: float, trigger: str, **detail: float) -> Action:
        self.mode = "thinking"
        self.user_spoke = False
        return Action("take_turn", t, trigger, dict(detail, user_end=self.last_active_end))

    def _onset(self, t: float) -> float:
        vad_start = t - self.active_run
        return min(vad_start, self.loud_since) if self.loud_since is not None else vad_start

    def _barge_in(self, t: float, trigger: str, **detail: float) -> Action:
        start = self.candidate_start if self.candidate_start is not None else self._onset(t)
        self.mode = "listening"
        self.candidate_start = None
        self.resumed = None
        self.user_spoke = True
        self.continue_run = 0
        return Action("barge_in", t, trigger, dict(detail, user_start=start))

    def _resume(self, t: float, trigger: str, **detail: float) -> Action:
        start = self.candidate_start
        self.resumed = (t, self.candidate_active, self.candidate_rejected)
        self.candidate_start = None
        self.dismissed = self.active
        self.continue_run = 0
        return Action("resume_output", t, trigger, dict(detail, candidate_start=start))
