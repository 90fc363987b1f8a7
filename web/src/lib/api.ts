// The gRPC-Web client for avatar.v1.SessionService, generated from ../protos (see ../clients/node/buf.gen.yaml, the
// config shared with the Node.js client), on the same origin as the page (Envoy routes /avatar.v1.SessionService/*
// to the session service).
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { SessionService } from "../gen/avatar/v1/session_pb";
import type { SessionSource } from "./session-source";

export type SessionClient = Client<typeof SessionService>;

/** `keepalive`: requests that may outlive the page (EndSession on leaving). */
export function createSessionClient(baseUrl: string = window.location.origin, keepalive = false): SessionClient {
  const transport = createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    fetch: keepalive ? (input, init) => globalThis.fetch(input, { ...init, keepalive: true }) : undefined,
  });
  return createClient(SessionService, transport);
}

/** Call options that steer or watch `session`: its control token as a bearer credential (never the API key, which
 * stays on the backend that created the session). */
export function steering(session: { controlToken: string }): { headers: Record<string, string> } {
  return { headers: { authorization: `Bearer ${session.controlToken}` } };
}

/** Ends `session` without waiting or minding failure (best effort: the server frees it now rather than at its idle
 * timeout). Use a keepalive client (createSessionClient(url, true)) when the page may be leaving. */
export function endSessionQuietly(client: SessionClient, session: { sessionId: string; controlToken: string }): void {
  client.endSession({ sessionId: session.sessionId }, steering(session)).catch(() => undefined);
}

/** Standalone mode: the page creates its own session through the gateway (a server without API keys, or one that
 * lets this page's origin in some other way). */
export function gatewaySessionSource(client: SessionClient): SessionSource {
  return {
    kind: "gateway",
    async create({ avatar, voice, portrait }, timeoutMs) {
      const reply = await client.createSession(portrait ? { portrait, voice } : { avatar, voice }, { timeoutMs });
      if (!reply.session) throw new Error("CreateSession returned no session");
      return reply.session;
    },
  };
}
