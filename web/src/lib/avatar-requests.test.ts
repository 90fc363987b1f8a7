// Say/Chat and Interrupt against a fake server: the turn, the retry on a new session, refusals. `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { SessionSchema, type Session, type WatchSessionResponse } from "../gen/avatar/v1/session_pb";
import type { SessionClient } from "./api";
import { AvatarRequests } from "./avatar-requests";
import { Conversation } from "./conversation";
import { Notices } from "./notices";
import type { FailureAction } from "./session-failures";

const session = (id: string): Session => create(SessionSchema, { sessionId: id, controlToken: `token-${id}` });

/** Requests over a fake client whose Say/Chat/Interrupt answer with `replies` in order (an Error is thrown). */
function requests(replies: Array<string | Error>, current: Session | null = session("s1")) {
  const calls: Array<{ method: string; sessionId: string; text?: string; authorization: string }> = [];
  const call = (method: string) => async (request: { sessionId: string; text?: string }, options: CallOptions) => {
    calls.push({ method, ...request, authorization: options.headers.authorization });
    const reply = replies.shift();
    if (reply instanceof Error) throw reply;
    return { utteranceId: reply ?? "" };
  };
  const client = { say: call("say"), chat: call("chat"), interrupt: call("interrupt") } as unknown as SessionClient;
  const keeper = {
    session: current,
    lost: [] as string[],
    failures: [] as FailureAction[],
  };
  const notices = new Notices(() => undefined);
  const conversation = new Conversation<WatchSessionResponse>();
  const replayed: WatchSessionResponse[] = [];
  const avatar = new AvatarRequests({
    client,
    keeper: {
      get session() {
        return keeper.session;
      },
      waitForSession: async () => keeper.session,
      lost: (lostSession) => {
        keeper.lost.push(lostSession.sessionId);
        keeper.session = session(`${lostSession.sessionId}+`); // the keeper makes a new one
      },
      handleFailure: (action) => keeper.failures.push(action),
    },
    conversation,
    notices,
    replay: (event) => replayed.push(event),
    changed: () => undefined,
  });
  return { avatar, calls, keeper, notices, conversation, replayed };
}

interface CallOptions {
  headers: { authorization: string };
}

test("Say sends the trimmed text with the session's token; the turn gets its utterance", async () => {
  const { avatar, calls, conversation } = requests(["u1"]);
  assert.equal(await avatar.send("  hello  ", "say"), true);
  assert.deepEqual(calls, [{ method: "say", sessionId: "s1", text: "hello", authorization: "Bearer token-s1" }]);
  assert.equal(conversation.turns[0].utteranceId, "u1");
  assert.equal(conversation.turns[0].userText, "hello");
  assert.equal(conversation.sending, false);
});

test("events that came before the reply are replayed once it names their utterance", async () => {
  const { avatar, conversation, replayed } = requests(["u1"]);
  const sending = avatar.send("hi", "chat");
  const early = {} as WatchSessionResponse;
  assert.equal(conversation.turnFor("u1", early), null);
  assert.equal(await sending, true);
  assert.deepEqual(replayed, [early]);
});

test("empty text is not sent", async () => {
  const { avatar, calls, notices } = requests([]);
  assert.equal(await avatar.send("   ", "say"), false);
  assert.equal(calls.length, 0);
  assert.equal(notices.currentInputError, "Type something for the avatar to say.");
});

test("a session lost under Say is replaced and the text sent again, once", async () => {
  const { avatar, calls, keeper } = requests([new ConnectError("gone", Code.NotFound), "u2"]);
  assert.equal(await avatar.send("hello", "say"), true);
  assert.deepEqual(keeper.lost, ["s1"]);
  assert.deepEqual(
    calls.map((c) => c.sessionId),
    ["s1", "s1+"],
  );

  const twice = requests([new ConnectError("gone", Code.NotFound), new ConnectError("gone", Code.NotFound)]);
  assert.equal(await twice.avatar.send("hello", "say"), false);
  assert.equal(twice.calls.length, 2);
  assert.match(twice.conversation.turns[0].error, /^Not sent: /);
});

test("a refused text is taken back with the reason; an unreachable server keeps it with its own", async () => {
  const refused = requests([new ConnectError("text too long", Code.InvalidArgument)]);
  assert.equal(await refused.avatar.send("hello", "say"), false);
  assert.equal(refused.conversation.turns.length, 0);
  assert.equal(refused.notices.currentInputError, "text too long");

  const down = requests([new ConnectError("down", Code.Unavailable)]);
  assert.equal(await down.avatar.send("hello", "say"), false);
  assert.equal(down.conversation.turns[0].error, "Not sent: can't reach the server.");
  assert.equal(down.notices.offline, true);
});

test("without a session nothing is sent", async () => {
  const { avatar, calls, conversation, notices } = requests([], null);
  assert.equal(await avatar.send("hello", "say"), false);
  assert.equal(calls.length, 0);
  assert.equal(conversation.turns[0].error, "Not sent: not connected to the server yet.");
  assert.equal(notices.currentInputError, "Not connected yet — try again in a moment.");
});

test("Interrupt: sent to the session; a failure goes to the keeper", async () => {
  const { avatar, calls, keeper } = requests(["", new ConnectError("gone", Code.NotFound)]);
  await avatar.interrupt();
  await avatar.interrupt();
  assert.deepEqual(
    calls.map((c) => c.method),
    ["interrupt", "interrupt"],
  );
  assert.deepEqual(keeper.failures, [{ kind: "new-session" }]);
});
