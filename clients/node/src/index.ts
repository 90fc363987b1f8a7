// @infinitetalk/live-client: the InfiniteTalk Live API (avatar.v1) from Node.js, over gRPC or gRPC-Web.
export { connect, LiveClient, SessionHandle } from "./client.js";
export type { ConnectOptions, CreateSessionOptions, SessionGrant, TransportKind } from "./client.js";
export { ApiError, codeName } from "./errors.js";
export { toEvent } from "./events.js";
export type { EventBase, FinishName, SessionEvent, SourceName, StateName } from "./events.js";
export { Code } from "@connectrpc/connect";
// The generated messages and enums (also importable one file at a time: "@infinitetalk/live-client/gen/...").
export * from "./gen/avatar/v1/session_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
/** The API version this package speaks. */
export const API_VERSION = "avatar.v1";
