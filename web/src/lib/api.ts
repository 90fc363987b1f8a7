// The gRPC-Web client for avatar.v1.SessionService, generated from ../protos (see buf.gen.yaml), on the same
// origin as the page (Envoy routes /avatar.v1.SessionService/* to the session service).
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { SessionService } from "@/gen/avatar/v1/session_pb";

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
