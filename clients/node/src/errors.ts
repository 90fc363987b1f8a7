// Errors as the API gives them: a canonical gRPC code, the server's sentence, and the google.rpc details it attached
// (decoded, so a caller can branch on a BadRequest field or a QuotaFailure subject instead of parsing text).
import { createRegistry, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  file_google_rpc_error_details,
  QuotaFailureSchema,
  ResourceInfoSchema,
  type BadRequest,
  type QuotaFailure,
  type ResourceInfo,
} from "./gen/google/rpc/error_details_pb.js";

// Every google.rpc error detail type: findDetails() decodes the ones it knows and skips the rest.
const DETAILS = createRegistry(file_google_rpc_error_details);

/** "INVALID_ARGUMENT" for Code.InvalidArgument: the names gRPC's documentation and other clients use. */
export function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export class ApiError extends Error {
  override readonly name = "ApiError";
  /** The gRPC status code (the same numbers as grpc-status). */
  readonly code: Code;
  /** The server's own sentence (grpc-message), without a code prefix. */
  readonly rawMessage: string;
  /** Every google.rpc detail the error carried that this package knows (grpc-status-details-bin), decoded. */
  readonly details: Message[];
  /** Response headers and trailers. */
  readonly metadata: Headers;

  constructor(error: ConnectError) {
    super(`${codeName(error.code)}: ${error.rawMessage}`, { cause: error });
    this.code = error.code;
    this.rawMessage = error.rawMessage;
    this.metadata = error.metadata;
    let details: Message[] = [];
    try {
      details = error.findDetails(DETAILS);
    } catch {
      // undecodable details: the code and the sentence still say what happened
    }
    this.details = details;
  }

  /** Any error (a ConnectError, a network failure, an abort) as an ApiError. */
  static from(error: unknown): ApiError {
    return error instanceof ApiError ? error : new ApiError(ConnectError.from(error));
  }

  get codeName(): string {
    return codeName(this.code);
  }

  /** INVALID_ARGUMENT: which fields were refused and why. */
  get badRequest(): BadRequest | undefined {
    return this.detail<BadRequest>(BadRequestSchema.typeName);
  }

  /** RESOURCE_EXHAUSTED: what ran out ("sessions", "video.workers", "session:<id>" for a session's own rate). */
  get quotaFailure(): QuotaFailure | undefined {
    return this.detail<QuotaFailure>(QuotaFailureSchema.typeName);
  }

  /** NOT_FOUND and the like: which resource. */
  get resourceInfo(): ResourceInfo | undefined {
    return this.detail<ResourceInfo>(ResourceInfoSchema.typeName);
  }

  private detail<T extends Message>(typeName: string): T | undefined {
    return this.details.find((d) => d.$typeName === typeName) as T | undefined;
  }
}

/** Runs `call`, turning whatever it throws into an ApiError. */
export async function api<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw ApiError.from(error);
  }
}
