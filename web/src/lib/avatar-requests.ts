// The person's requests to the avatar: Say or Chat (waiting a moment for a session when there is none yet, and sent
// once more on a new session when the old one expired under it) and Interrupt. Each Say/Chat is a turn in the
// conversation from the moment it is sent; a refused one is taken back and its reason shows next to the input.
import type { WatchSessionResponse } from "../gen/avatar/v1/session_pb";
import { steering, type SessionClient } from "./api";
import type { Conversation } from "./conversation";
import { describeError, sessionLost } from "./errors";
import type { Notices } from "./notices";
import { interruptFailure, sendFailure } from "./session-failures";
import type { SessionKeeper } from "./session-keeper";
import type { Mode } from "./transcript";

/** A Say/Chat call waits this long for a session when there is none yet. */
const WAIT_FOR_SESSION_MS = 8000;
const SEND_TIMEOUT_MS = 15000;
const INTERRUPT_TIMEOUT_MS = 10000;

export interface AvatarRequestParts {
  client: SessionClient;
  /** The page's session, and what to do when a call on it fails (the part of the SessionKeeper requests use). */
  keeper: Pick<SessionKeeper, "session" | "waitForSession" | "lost" | "handleFailure">;
  conversation: Conversation<WatchSessionResponse>;
  notices: Notices;
  /** Applies an event that waited for its Say/Chat reply. */
  replay(event: WatchSessionResponse): void;
  /** Something a snapshot shows changed. */
  changed(): void;
}

export class AvatarRequests {
  constructor(private readonly parts: AvatarRequestParts) {}

  /** Sends text; resolves true when the server accepted it (the input can be cleared). */
  async send(rawText: string, mode: Mode): Promise<boolean> {
    const { client, keeper, conversation, notices } = this.parts;
    const text = rawText.trim();
    if (!text) {
      notices.setInputError("Type something for the avatar to say.");
      return false;
    }
    // Over MAX_TEXT_CHARS the page warns (counter) but lets the server decide: its INVALID_ARGUMENT message, which
    // names the limit it enforces, shows next to the input.
    notices.setInputError("");
    const turn = conversation.send(mode, text);
    this.parts.changed();
    try {
      for (let tries = 0; ; tries++) {
        const session = keeper.session ?? (await keeper.waitForSession(WAIT_FOR_SESSION_MS));
        if (!session) {
          turn.error = "Not sent: not connected to the server yet.";
          notices.setInputError("Not connected yet — try again in a moment.");
          return false;
        }
        try {
          const request = { sessionId: session.sessionId, text };
          const options = { timeoutMs: SEND_TIMEOUT_MS, ...steering(session) };
          const reply = mode === "chat" ? await client.chat(request, options) : await client.say(request, options);
          turn.utteranceId = reply.utteranceId;
          for (const event of conversation.claimWaiting(turn)) this.parts.replay(event);
          return true;
        } catch (err) {
          const info = describeError(err);
          if (sessionLost(info) && tries === 0) {
            // The session expired under us: make a new one and send again, once.
            keeper.lost(session);
            continue;
          }
          const failure = sendFailure(info);
          if (failure.withdraw) conversation.withdraw(turn);
          else turn.error = failure.turnError;
          if (failure.offline) notices.setOffline(true);
          notices.setInputError(failure.inputError);
          return false;
        }
      }
    } finally {
      conversation.settle();
      this.parts.changed();
    }
  }

  async interrupt(): Promise<void> {
    const { client, keeper } = this.parts;
    const session = keeper.session;
    if (!session) return;
    try {
      const options = { timeoutMs: INTERRUPT_TIMEOUT_MS, ...steering(session) };
      await client.interrupt({ sessionId: session.sessionId }, options);
    } catch (err) {
      keeper.handleFailure(interruptFailure(describeError(err)), session);
    }
  }
}
