import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import { Writer } from 'pg-protocol/dist/buffer-writer.js';
import tls from 'node:tls';
import type { Logger } from '../logger.js';
import { AuthCode, BackendTag, FrontendTag, type TxStatus } from '../protocol/codes.js';
import { Framer, type Frame } from '../protocol/framer.js';
import { decodeFrontendMessage, decodeStartupPacket, frontendMessageLimit, type StartupPacket } from '../protocol/frontend.js';
import {
  SSL_ACCEPT,
  SSL_REFUSE,
  authCode,
  decodeBackendKeyData,
  decodeBackendMessage,
  encodeAuthenticationSASL,
  encodeBackendKeyData,
  encodeErrorResponse,
  encodeNoticeResponse,
  encodeReadyForQuery,
  readyForQueryStatus,
  type PgErrorFields,
} from '../protocol/backend.js';
import { encodeCancelRequest, encodeStartupMessage } from '../protocol/frontend-encode.js';
import { pgError } from '../protocol/pg-error.js';
import { ProtocolViolation } from '../protocol/protocol-violation.js';
import type { CancelKeys, CancelTarget } from './cancel-keys.js';
import type { Decision, RequestJudge } from './decision.js';
import { Outcomes } from './outcomes.js';
import { RowCaps } from './row-caps.js';
import { OutputBatch } from './output-batch.js';
import { MaskWindows } from './mask-windows.js';
import type { ReceivedMessage, Request } from './request.js';
import { RequestAssembler } from './request-assembler.js';
import type { SessionInfo } from './session-info.js';
import { StatementTracker } from './statement-tracker.js';
import { UpstreamConnectError, connectUpstream, type UpstreamTarget } from './upstream-connect.js';
import type { AgentDirectory } from '../identity/agent-directory.js';
import type { AgentIdentity } from '../identity/agent-identity.js';
import type { AgentLogin, LoginStep } from '../identity/agent-login.js';
import { UpstreamLogin, type UpstreamLoginStep } from '../identity/upstream-login.js';

export interface SessionLimits {
  maxMessageBytes: number;
  /** An extended batch larger than this without Sync is judged and forwarded in parts. */
  maxBatchBytes: number;
  /** Client bytes buffered while a request waits for its decision; past it the client is paused. */
  maxHeldBytes: number;
  startupTimeoutMs: number;
}

export interface SessionDeps {
  limits: SessionLimits;
  upstream: UpstreamTarget;
  /** Present when the proxy terminates TLS for clients. */
  tlsContext?: tls.SecureContext;
  judge: RequestJudge;
  cancelKeys: CancelKeys;
  /** Routes a CancelRequest that arrived on this connection to the session owning the key. */
  routeCancel(processId: number, secretKey: Buffer): void;
  /** identity.mode agents: pgwarden authenticates the agent and logs in upstream as its role. */
  agents?: AgentDirectory;
  log: Logger;
  onClose(session: Session): void;
}

/**
 * Connection phases (pg-gateway's ServerStep, one switch per direction):
 *   startup     reading SSLRequest / GSSENCRequest / CancelRequest / StartupMessage
 *   agent-auth  identity.mode agents: pgwarden authenticates the agent itself (SCRAM or token)
 *   connecting  StartupMessage received (or the agent verified), opening the upstream connection
 *   auth        relaying authentication between client and upstream (agents: pgwarden logs in
 *               as the agent's role, and only the server's AuthenticationOk reaches the client)
 *   probing     authenticated; reading the session's effective search_path before the client's
 *               first ReadyForQuery (role and database defaults are invisible otherwise)
 *   ready       judging requests and relaying results
 *   closed
 */
type Phase = 'startup' | 'agent-auth' | 'connecting' | 'auth' | 'probing' | 'ready' | 'closed';

let nextSessionId = 1;

export class Session implements SessionInfo, CancelTarget {
  readonly id = nextSessionId++;
  readonly clientAddress: string;
  startupParams: ReadonlyMap<string, string> = new Map();
  tls = false;
  txStatus: TxStatus = 'I';
  /** When the current transaction block began (first ReadyForQuery not 'I'); null when idle. */
  transactionSince: number | null = null;
  readonly serverParams = new Map<string, string>();
  /** The verified agent (identity.mode agents). */
  identity: AgentIdentity | undefined;
  private agentLogin: AgentLogin | null = null;
  /** The client's protocol version, for the StartupMessage sent upstream (possibly after agent login). */
  private protocolVersion = 0;
  private upstreamLogin: UpstreamLogin | null = null;
  /** The database the agent is mapped to (identity.mode agents). */
  private mappedDatabase: string | null = null;
  private readonly tracker = new StatementTracker();

  private phase: Phase = 'startup';
  private client: Socket;
  private upstream: Socket | null = null;
  private readonly clientFramer: Framer;
  private readonly serverFramer: Framer;
  private readonly assembler: RequestAssembler;
  private readonly toUpstream = new OutputBatch();
  private readonly toClient = new OutputBatch();
  private readonly log: Logger;

  /** Client frames are not processed while set: a decision or an ordered reply is pending. */
  private waiting = false;
  private decisionAbort: AbortController | null = null;
  private nextAbort = new AbortController();
  /** Replies pgwarden wrote itself that must follow the responses still owed by the server. */
  private orderedReplies: Buffer[] = [];
  /**
   * ReadyForQuery messages owed by the server (one per forwarded Query, Sync, FunctionCall) and
   * received so far; numbering them lets replies be matched to the request they answer.
   */
  private readyExpected = 0;
  private readySeen = 0;
  /**
   * Statements pgwarden sent itself to put the server's transaction into the failed state after
   * refusing a statement inside a transaction block (the client must see 'E', and the server must
   * agree, or a later COMMIT would commit half of what the client believes failed). `ready` is the
   * number of the ReadyForQuery that ends it; its ErrorResponse is replaced by `replacement`
   * (pgwarden's own error) or dropped when null.
   */
  private injected: { ready: number; replacement: Buffer | null }[] = [];
  private readonly rowCaps = new RowCaps();
  private readonly maskWindows = new MaskWindows();
  private readonly outcomes = new Outcomes();
  /** Why the session ended (a SQLSTATE, or who hung up), for the decision step's closed() hook. */
  private endReason = 'client-disconnected';
  private serverFatalCode: string | null = null;
  private startupSeen = false;
  private wasReady = false;
  /** After a denied partial batch, the server's rule: discard until Sync, then ReadyForQuery. */
  private discardUntilSync = false;
  /**
   * The server is in copy-in mode as its answers show: from CopyInResponse until the COPY's
   * CommandComplete or ErrorResponse (or a ReadyForQuery). Replies of pgwarden's own wait meanwhile.
   */
  private copyIn = false;
  /**
   * The server is reading COPY data from the stream pgwarden forwards: from CopyInResponse until
   * CopyDone or CopyFail is forwarded (or the COPY fails). A Sync forwarded meanwhile is ignored
   * by the server ("COPY Operations") and gets no ReadyForQuery; the first one after CopyDone does.
   */
  private copyDataExpected = false;
  private lastForwardedSyncedExtended = false;
  private negotiations = 0;
  private upstreamKey: { processId: number; secretKey: Buffer } | null = null;
  private ourProcessId: number | null = null;
  private heldReady: Buffer | null = null;
  private startupTimer: NodeJS.Timeout | null;
  private clientPaused = false;
  private upstreamNeedsDrain = false;
  private clientNeedsDrain = false;
  private shuttingDown = false;
  private serverSentFatal = false;

  constructor(
    socket: Socket,
    private readonly deps: SessionDeps,
  ) {
    this.client = socket;
    this.clientAddress = `${socket.remoteAddress ?? 'unix'}:${socket.remotePort ?? 0}`;
    this.log = deps.log.child({ session: this.id, client: this.clientAddress });
    this.clientFramer = new Framer(deps.limits.maxMessageBytes, 'startup', frontendMessageLimit);
    this.serverFramer = new Framer(Number.MAX_SAFE_INTEGER, 'typed');
    this.assembler = new RequestAssembler(deps.limits.maxBatchBytes);
    socket.setNoDelay(true);
    this.attachClient(socket);
    this.startupTimer = setTimeout(() => this.fail(pgError.startupTimeout()), deps.limits.startupTimeoutMs);
  }

  // ---- SessionInfo ----
  get user(): string {
    return this.startupParams.get('user') ?? '';
  }
  get database(): string {
    return this.mappedDatabase ?? this.startupParams.get('database') ?? this.user;
  }
  statementCandidates(name: string): string[] {
    return this.tracker.statementCandidates(name);
  }
  portalCandidates(portal: string): string[] {
    return this.tracker.portalCandidates(portal);
  }
  private get outstanding(): number {
    return this.readyExpected - this.readySeen;
  }

  get isIdle(): boolean {
    return this.phase !== 'ready' || (this.outstanding === 0 && !this.waiting && this.txStatus === 'I');
  }

  // ---- client side ----

  private attachClient(socket: Socket): void {
    socket.on('data', this.onClientData);
    socket.on('drain', this.onClientDrain);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onClientClose);
  }

  private detachClient(socket: Socket): void {
    socket.off('data', this.onClientData);
    socket.off('drain', this.onClientDrain);
    socket.off('error', this.onSocketError);
    socket.off('close', this.onClientClose);
  }

  private readonly onClientData = (chunk: Buffer): void => {
    if (this.phase === 'closed') return;
    this.clientFramer.push(chunk);
    this.pumpClient();
  };

  private readonly onClientDrain = (): void => {
    this.clientNeedsDrain = false;
    this.upstream?.resume();
  };

  private readonly onSocketError = (err: Error): void => {
    this.log.debug({ err: { code: (err as NodeJS.ErrnoException).code, message: err.message } }, 'socket error');
    this.close();
  };

  private readonly onClientClose = (): void => {
    this.close();
  };

  private pumpClient(): void {
    try {
      let frame: Frame | null;
      while (!this.waiting && this.phase !== 'closed' && this.phase !== 'connecting' && this.phase !== 'probing' && (frame = this.clientFramer.next())) {
        this.onClientFrame(frame);
      }
    } catch (err) {
      this.onClientError(err);
      return;
    }
    this.flushUpstream();
    this.updateClientFlow();
  }

  private onClientError(err: unknown): void {
    if (err instanceof ProtocolViolation) {
      this.log.info({ sqlstate: err.sqlstate, reason: err.message }, 'protocol violation from client');
      this.fail(pgError.protocolViolation(err.message, err.sqlstate));
    } else {
      this.log.error({ err }, 'internal error while handling client input');
      this.fail({ severity: 'FATAL', code: 'XX000', message: 'pgwarden: internal error' });
    }
  }

  private onClientFrame(frame: Frame): void {
    switch (this.phase) {
      case 'startup':
        this.onStartupPacket(decodeStartupPacket(frame));
        return;
      case 'agent-auth':
        if (frame.tag !== FrontendTag.AuthResponse) {
          if (frame.tag === FrontendTag.Terminate) this.close();
          else throw new ProtocolViolation(`expected authentication response, got message type ${frame.tag}`);
          return;
        }
        this.onAgentAuthResponse(frame);
        return;
      case 'auth':
        if (this.upstreamLogin) {
          // pgwarden is logging in for the agent: the client has nothing to say until AuthenticationOk.
          if (frame.tag === FrontendTag.Terminate) this.close();
          else throw new ProtocolViolation(`unexpected message type ${frame.tag} during authentication`);
          return;
        }
        if (frame.tag === FrontendTag.AuthResponse) {
          this.toUpstream.push(frame.bytes);
        } else if (frame.tag === FrontendTag.Terminate) {
          this.close();
        } else {
          throw new ProtocolViolation(`expected authentication response, got message type ${frame.tag}`);
        }
        return;
      case 'ready':
        this.onReadyFrame(frame);
        return;
      default:
        return;
    }
  }

  private onStartupPacket(p: StartupPacket): void {
    switch (p.type) {
      case 'SSLRequest':
      case 'GSSENCRequest': {
        if (++this.negotiations > 2) throw new ProtocolViolation('too many encryption negotiation requests');
        // Bytes already queued behind the request were sent in plaintext before the handshake:
        // accepting them would allow injection (CVE-2021-23214 in PostgreSQL's terms).
        if (this.clientFramer.pendingBytes > 0) {
          this.fail(pgError.dataBeforeTls());
          return;
        }
        if (p.type === 'SSLRequest' && this.deps.tlsContext && !this.tls) {
          this.client.write(SSL_ACCEPT);
          this.upgradeClientToTls(this.deps.tlsContext);
        } else {
          // GSS encryption is not offered ('N', not an error: JDBC would reconnect otherwise).
          this.client.write(SSL_REFUSE);
        }
        return;
      }
      case 'CancelRequest':
        // Answering nothing is the protocol: the server just closes the connection.
        this.deps.routeCancel(p.processId, p.secretKey);
        this.phase = 'closed';
        this.client.end();
        this.cleanup();
        return;
      case 'StartupMessage':
        this.onStartupMessage(p.protocolVersion, p.params);
        return;
    }
  }

  private upgradeClientToTls(secureContext: tls.SecureContext): void {
    const raw = this.client;
    this.detachClient(raw);
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext });
    this.client = secure;
    this.tls = true;
    this.attachClient(secure);
  }

  private onStartupMessage(protocolVersion: number, params: Map<string, string>): void {
    if (!params.get('user')) {
      this.fail(pgError.missingUser());
      return;
    }
    // From here on the attempt has an identity: its end is reported even if it is refused.
    this.startupParams = params;
    this.startupSeen = true;
    const replication = params.get('replication');
    if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
      this.fail(pgError.replicationRefused());
      return;
    }
    const refusal = this.deps.judge.checkStartup?.(params);
    if (refusal) {
      this.log.info({ sqlstate: refusal.code }, 'startup parameters refused');
      this.fail(refusal);
      return;
    }
    this.clientFramer.mode = 'typed';
    this.protocolVersion = protocolVersion;
    if (this.deps.agents) {
      this.phase = 'agent-auth';
      this.agentLogin = this.deps.agents.begin(this.user, this.database, this.tls);
      this.onAgentLoginStep(this.agentLogin.start());
      return;
    }
    this.connect(params);
  }

  /** Opens the upstream connection and sends it the StartupMessage with `params`. */
  private connect(params: ReadonlyMap<string, string>): void {
    this.phase = 'connecting';
    this.log.info(
      { user: this.user, database: this.database, application_name: params.get('application_name') ?? '', tls: this.tls, ...(this.identity ? { agent: this.identity.agent, role: this.identity.role, via: this.identity.via } : {}) },
      'client connected',
    );
    const startup = encodeStartupMessage(this.protocolVersion, new Map(params));
    connectUpstream(this.deps.upstream).then(
      (socket) => this.onUpstreamConnected(socket, startup),
      (err: unknown) => {
        const reason = err instanceof UpstreamConnectError ? err.reason : 'unreachable';
        this.log.warn({ reason, message: (err as Error).message }, 'upstream connection failed');
        this.fail(reason === 'tls-required' ? pgError.upstreamTlsRequired() : pgError.upstreamUnavailable());
      },
    );
  }

  /** An authentication message from the agent (the body of a 'p' message). */
  private onAgentAuthResponse(frame: Frame): void {
    const login = this.agentLogin;
    if (!login) return;
    this.waiting = true;
    login.onMessage(frame).then(
      (step) => {
        this.waiting = false;
        this.onAgentLoginStep(step);
        if (this.phase === 'agent-auth') this.pumpClient();
      },
      (err: unknown) => {
        this.waiting = false;
        if (err instanceof ProtocolViolation) this.onClientError(err);
        else {
          this.log.error({ err }, 'agent authentication failed unexpectedly');
          this.fail(pgError.agentAuthFailed(this.user));
        }
      },
    );
  }

  private onAgentLoginStep(step: LoginStep): void {
    if (this.phase !== 'agent-auth') return;
    if ('error' in step) {
      this.log.info({ agent: this.user, reason: step.reason }, 'agent authentication failed');
      this.fail(step.error);
      return;
    }
    if (step.send) this.client.write(step.send);
    if (!('done' in step)) return;
    const { identity, database } = step.done;
    this.agentLogin = null;
    this.identity = identity;
    this.mappedDatabase = database;
    this.deps.agents!.register(this);
    // Upstream, the session is the agent's role; what the client asked for otherwise stays.
    const params = new Map(this.startupParams);
    params.set('user', identity.role);
    params.set('database', database);
    this.upstreamLogin = new UpstreamLogin({ user: identity.role, password: this.deps.agents!.rolePassword(identity.role) });
    this.connect(params);
  }

  /** identity.mode agents: an Authentication request from the server, answered by pgwarden. */
  private onUpstreamAuthentication(frame: Frame): void {
    const login = this.upstreamLogin!;
    const handle = (r: UpstreamLoginStep) => {
      if (this.phase !== 'auth') return;
      if (r.error) {
        this.log.warn({ role: this.identity?.role, reason: r.error }, 'upstream login for an agent failed');
        this.fail(pgError.upstreamLoginFailed());
        return;
      }
      for (const m of r.send ?? []) this.toUpstream.push(m);
      this.flushUpstream();
      if (r.done) {
        this.upstreamLogin = null;
        this.toClient.push(frame.bytes); // AuthenticationOk
        this.flushClient();
      }
    };
    // UpstreamLogin answers with a Promise that never rejects (node-postgres's SCRAM is async).
    this.serverHeld = true;
    login.onAuthentication(frame.bytes).then((r) => {
      this.serverHeld = false;
      handle(r);
      this.pumpServer();
    });
  }

  private onUpstreamConnected(socket: Socket, startup: Buffer): void {
    if (this.phase === 'closed') {
      socket.destroy();
      return;
    }
    this.upstream = socket;
    socket.on('data', this.onServerData);
    socket.on('drain', this.onUpstreamDrain);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onUpstreamClose);
    socket.resume();
    socket.write(startup);
    this.phase = 'auth';
    this.pumpClient();
  }

  private onReadyFrame(frame: Frame): void {
    const msg = decodeFrontendMessage(frame);
    if (msg.type === 'Terminate') {
      this.endReason = 'client-terminated';
      // close() sends the server its own Terminate after anything still queued.
      this.flushUpstream();
      this.close();
      return;
    }
    if (msg.type === 'AuthResponse') throw new ProtocolViolation('unexpected authentication message after startup');
    for (const request of this.assembler.add(frame, msg)) {
      this.onRequest(request);
    }
  }

  private onRequest(request: Request): void {
    if (request.kind === 'copy-data') {
      // COPY FROM STDIN payload belongs to a COPY statement that was already judged.
      this.forward(request);
      return;
    }
    if (this.discardUntilSync) {
      if (request.end === 'Sync') {
        this.discardUntilSync = false;
        if (this.txStatus === 'T') this.abortServerTransaction(null);
        else this.replyInOrder([encodeReadyForQuery(this.txStatus)]);
      }
      return;
    }
    // One controller per session, replaced only when an asynchronous decision took it:
    // creating an AbortSignal per request is measurable on the hot path.
    const abort = this.nextAbort;
    let decision: Decision | Promise<Decision>;
    try {
      decision = this.deps.judge.judge(request, this, abort.signal);
    } catch (err) {
      this.log.error({ err }, 'decision step failed; refusing the request');
      decision = { action: 'deny', rule: 'internal-error', error: { severity: 'ERROR', code: 'XX000', message: 'pgwarden: internal error while judging the statement' } };
    }
    if (decision instanceof Promise) {
      this.waiting = true;
      this.decisionAbort = abort;
      this.nextAbort = new AbortController();
      this.flushUpstream();
      decision
        .catch((err: unknown): Decision => {
          this.log.error({ err }, 'decision step failed; refusing the request');
          return { action: 'deny', rule: 'internal-error', error: { severity: 'ERROR', code: 'XX000', message: 'pgwarden: internal error while judging the statement' } };
        })
        .then((d) => {
          if (this.phase === 'closed') return;
          this.waiting = false;
          this.decisionAbort = null;
          this.apply(request, d);
          this.pumpClient();
        });
      return;
    }
    this.apply(request, decision);
  }

  private apply(request: Request, decision: Decision): void {
    if (decision.action === 'allow' && decision.elevate !== undefined && request.kind === 'extended' && request.end !== 'Sync') {
      // RESET ROLE cannot be placed inside an unfinished batch: an error in it would make the
      // server skip the RESET, leaving the role elevated.
      decision = { action: 'deny', rule: decision.rule ?? 'elevation', error: pgError.elevationNeedsSync() };
    }
    if (decision.action === 'allow') {
      if (decision.elevate !== undefined) {
        this.log.info({ role: decision.elevate, approval: decision.approval?.id }, 'running an approved statement under an elevated role');
        this.injectSilent(`SET ROLE ${quoteIdent(decision.elevate)}`);
      }
      const from = this.readyExpected;
      const describes = this.forward(request, decision.mask !== undefined);
      const to = Math.max(this.readyExpected, from + 1);
      if (decision.mask) {
        const { masker, done } = decision.mask;
        this.maskWindows.track(masker, from, to, describes, done ?? (() => {}));
      }
      if (decision.rowCap) this.rowCaps.track(decision.rowCap, from, to);
      if (decision.elevate !== undefined) this.injectSilent('RESET ROLE');
      if (decision.onDone) this.outcomes.watch(decision.onDone, from, to);
      return;
    }
    this.log.info({ rule: decision.rule, sqlstate: decision.error.code, kind: request.kind }, 'request refused');
    const error = encodeErrorResponse(decision.error);
    const answersNow = request.kind !== 'extended' || request.end === 'Sync';
    if (this.txStatus === 'T' && answersNow) {
      // Inside a transaction block: make the server's transaction fail too, and show our error
      // in place of the one the failing statement produces.
      this.abortServerTransaction(error);
      return;
    }
    if (answersNow) {
      this.replyInOrder([error, encodeReadyForQuery(this.txStatus)]);
    } else {
      // The server's rule after an error in an extended batch: skip to Sync, then ReadyForQuery.
      this.discardUntilSync = true;
      this.replyInOrder([error]);
    }
  }

  /**
   * A Query of pgwarden's own whose whole answer (CommandComplete, ParameterStatus such as
   * is_superuser, ReadyForQuery, or an error) the client never sees.
   */
  private injectSilent(sql: string): void {
    this.readyExpected++;
    this.silent.push(this.readyExpected);
    this.toUpstream.push(new Writer().addCString(sql).flush(FrontendTag.Query));
  }

  /** Ready numbers of silent queries (see injectSilent), in order. */
  private readonly silent: number[] = [];

  private abortServerTransaction(replacement: Buffer | null): void {
    this.readyExpected++;
    this.injected.push({ ready: this.readyExpected, replacement });
    this.toUpstream.push(ABORT_TRANSACTION);
  }

  /**
   * Forwards a request's messages. For a masked request, each Execute not directly preceded by
   * a Describe of its portal gets one (see MaskWindows); returns the describes in order.
   */
  private forward(request: Request, masked = false): ('client' | 'injected')[] {
    const describes: ('client' | 'injected')[] = [];
    let previous: ReceivedMessage['msg'] | null = null;
    for (const { frame, msg } of request.messages) {
      if (masked) {
        if (msg.type === 'Describe') describes.push('client');
        else if (msg.type === 'Execute' && !(previous?.type === 'Describe' && previous.target === 'P' && previous.name === msg.portal)) {
          describes.push('injected');
          this.toUpstream.push(serialize.describe({ type: 'P', name: msg.portal }));
        }
        previous = msg;
      }
      // The ReadyForQuery that ends this message's batch is the next one still to be numbered:
      // a Sync's or a Query's own, or the next Sync's for the messages of a batch before its Sync.
      this.tracker.observe(msg, this.readyExpected + 1);
      if (msg.type === 'Bind') this.rowCaps.portalBound(msg.portal);
      if (msg.type === 'Query' || msg.type === 'FunctionCall' || (msg.type === 'Sync' && !this.copyDataExpected)) {
        this.readyExpected++;
      }
      if (msg.type === 'CopyDone' || msg.type === 'CopyFail') this.copyDataExpected = false;
      this.toUpstream.push(frame.bytes);
    }
    if (request.kind !== 'copy-data') this.lastForwardedSyncedExtended = request.kind === 'extended' && request.end === 'Sync';
    return describes;
  }

  /**
   * Writes a reply pgwarden generated. It must not overtake responses the server still owes
   * for earlier requests, so it waits until every forwarded request has its ReadyForQuery.
   */
  private replyInOrder(messages: Buffer[]): void {
    if (this.outstanding === 0 && !this.copyIn) {
      for (const m of messages) this.toClient.push(m);
      this.flushClient();
      return;
    }
    this.orderedReplies.push(...messages);
    this.waiting = true;
    this.flushUpstream();
  }

  private releaseOrderedReplies(): void {
    if (this.orderedReplies.length === 0 || this.outstanding > 0 || this.copyIn) return;
    for (const m of this.orderedReplies) this.toClient.push(m);
    this.orderedReplies = [];
    this.waiting = false;
    // Continue with client input that queued up behind the reply.
    setImmediate(() => this.pumpClient());
  }

  private flushUpstream(): void {
    const upstream = this.upstream;
    if (!upstream || this.toUpstream.length === 0) return;
    if (!this.toUpstream.flushTo(upstream)) this.upstreamNeedsDrain = true;
  }

  private readonly onUpstreamDrain = (): void => {
    this.upstreamNeedsDrain = false;
    this.updateClientFlow();
  };

  /** Backpressure towards the client: stop reading while upstream is full or too much is held. */
  private updateClientFlow(): void {
    if (this.phase === 'closed') return;
    const shouldPause = this.upstreamNeedsDrain || this.clientFramer.pendingBytes > this.deps.limits.maxHeldBytes;
    if (shouldPause && !this.clientPaused) {
      this.clientPaused = true;
      this.client.pause();
    } else if (!shouldPause && this.clientPaused) {
      this.clientPaused = false;
      this.client.resume();
    }
  }

  // ---- server side ----

  private readonly onServerData = (chunk: Buffer): void => {
    this.serverFramer.push(chunk);
    this.pumpServer();
  };

  /**
   * Set while pgwarden answers an upstream Authentication request for an agent (asynchronously):
   * what the server sent after it (ParameterStatus, BackendKeyData …) must reach the client only
   * after the AuthenticationOk it answers.
   */
  private serverHeld = false;

  private pumpServer(): void {
    try {
      let frame: Frame | null;
      while (this.phase !== 'closed' && !this.serverHeld && (frame = this.serverFramer.next())) {
        this.onServerFrame(frame);
      }
    } catch (err) {
      this.log.error({ err }, 'malformed message from upstream');
      this.fail({ severity: 'FATAL', code: '08P01', message: 'pgwarden: invalid message from the upstream server' });
      return;
    }
    this.releaseOrderedReplies();
    this.flushClient();
  }

  private flushClient(): void {
    if (this.toClient.length === 0 || this.phase === 'closed') return;
    if (!this.toClient.flushTo(this.client) && !this.clientNeedsDrain) {
      this.clientNeedsDrain = true;
      this.upstream?.pause();
    }
  }

  private onServerFrame(frame: Frame): void {
    if (this.phase === 'probing') {
      this.onProbeFrame(frame);
      return;
    }
    if (this.silent.length > 0 && this.silent[0] === this.readySeen + 1) {
      // The answer to a silent query of pgwarden's own (SET ROLE / RESET ROLE of an elevation).
      this.tracker.onServerMessage(frame.tag, this.readySeen + 1);
      if (frame.tag === BackendTag.ReadyForQuery) {
        this.readySeen++;
        this.silent.shift();
        this.txStatus = readyForQueryStatus(frame);
      } else if (frame.tag === BackendTag.ErrorResponse) {
        const m = decodeBackendMessage(frame) as unknown as { code?: string };
        this.log.warn({ sqlstate: m.code }, 'role elevation statement failed');
      }
      return;
    }
    // What the server answers now ends with ReadyForQuery number readySeen + 1 (a ReadyForQuery
    // nobody expected is numbered like the last one, see below).
    if (this.phase === 'ready') this.tracker.onServerMessage(frame.tag, frame.tag === BackendTag.ReadyForQuery && this.outstanding === 0 ? this.readySeen : this.readySeen + 1);
    if (!this.maskWindows.idle && frame.tag !== BackendTag.ReadyForQuery) {
      const out = this.maskWindows.onFrame(this.readySeen, frame.tag, frame.bytes);
      if (out === null) return;
      if (out !== undefined && out !== frame.bytes) frame = { ...frame, bytes: out };
    }
    switch (frame.tag) {
      case BackendTag.ReadyForQuery:
        this.txStatus = readyForQueryStatus(frame);
        if (this.txStatus === 'I') this.transactionSince = null;
        else this.transactionSince ??= Date.now();
        this.copyIn = false;
        this.copyDataExpected = false;
        if (this.phase === 'auth') {
          this.startProbe(frame);
          return;
        }
        if (this.outstanding > 0) this.readySeen++;
        if (this.injected[0]?.ready === this.readySeen) this.injected.shift();
        this.rowCaps.onReady(this.readySeen);
        if (!this.maskWindows.idle) this.maskWindows.onReady(this.readySeen);
        if (!this.outcomes.idle) this.outcomes.onReady(this.readySeen);
        this.toClient.push(frame.bytes);
        if (this.shuttingDown && this.isIdle) this.shutdownNow();
        return;
      case BackendTag.Authentication:
        if (this.upstreamLogin && this.phase === 'auth') {
          this.onUpstreamAuthentication(frame);
          return;
        }
        this.toClient.push(this.phase === 'auth' ? this.rewriteAuthentication(frame) : frame.bytes);
        return;
      case BackendTag.BackendKeyData:
        this.toClient.push(this.issueBackendKey(frame));
        return;
      case BackendTag.ParameterStatus: {
        const m = decodeBackendMessage(frame) as unknown as { parameterName: string; parameterValue: string };
        this.serverParams.set(m.parameterName, m.parameterValue);
        this.toClient.push(frame.bytes);
        return;
      }
      case BackendTag.CopyInResponse:
        this.copyIn = true;
        this.copyDataExpected = true;
        // A COPY started by an extended batch: the server ignores the Sync that came with it
        // ("COPY Operations"), so that Sync will get no ReadyForQuery of its own.
        if (this.lastForwardedSyncedExtended && this.outstanding > 0) {
          this.readyExpected--;
          this.tracker.syncIgnored(this.readySeen + 1);
        }
        this.toClient.push(frame.bytes);
        return;
      case BackendTag.DataRow:
        if (!this.outcomes.idle) this.outcomes.onDataRow(this.readySeen);
        switch (this.rowCaps.onDataRow(this.readySeen)) {
          case 'forward':
            this.toClient.push(frame.bytes);
            return;
          case 'exceeded':
            // Past the cap: nothing more reaches the client; ask the server to stop producing.
            this.log.warn(this.rowCaps.describe(this.readySeen) ?? {}, 'row cap exceeded; result cut off');
            this.cancel();
            return;
          case 'drop':
            return;
        }
        return;
      case BackendTag.CopyOutResponse:
        if (!this.outcomes.idle) this.outcomes.onCopyOut(this.readySeen);
        this.toClient.push(frame.bytes);
        return;
      case BackendTag.CommandComplete:
        // The end of a COPY FROM STDIN (or any other statement): the server is out of copy-in
        // mode. After a COPY started by an extended batch it owes no ReadyForQuery until the
        // next Sync, so replies of pgwarden's own need not wait for one.
        this.copyIn = false;
        this.copyDataExpected = false;
        // Tag: a C string after the 5-byte header ("CommandComplete" in "Message Formats").
        if (!this.outcomes.idle) this.outcomes.onCommandComplete(this.readySeen, frame.bytes.toString('latin1', 5, frame.bytes.length - 1));
        this.forwardResultMessage(frame);
        return;
      case BackendTag.PortalSuspended:
      case BackendTag.EmptyQueryResponse:
      case BackendTag.RowDescription:
        this.forwardResultMessage(frame);
        return;
      case BackendTag.ErrorResponse: {
        // A COPY that fails leaves copy-in mode; from an extended batch the server then skips
        // to the next Sync, which is answered ("COPY Operations").
        this.copyIn = false;
        this.copyDataExpected = false;
        const replacement = this.rowCaps.onResultMessage(this.readySeen);
        if (replacement) {
          for (const m of replacement) this.toClient.push(m);
          return;
        }
        const inj = this.injected[0];
        if (inj && inj.ready === this.readySeen + 1) {
          if (inj.replacement) this.toClient.push(inj.replacement);
          return;
        }
        const m = decodeBackendMessage(frame) as unknown as { severity?: string; code?: string };
        if (this.upstreamLogin && this.phase === 'auth') {
          // The server refused the agent's role: the agent is told pgwarden could not log in.
          this.log.warn({ role: this.identity?.role, sqlstate: m.code }, 'upstream refused the login for an agent');
          this.fail(pgError.upstreamLoginFailed());
          return;
        }
        if (m.severity === 'FATAL' || m.severity === 'PANIC') {
          this.serverSentFatal = true;
          this.serverFatalCode = m.code ?? null;
        }
        if (!this.outcomes.idle && m.code) this.outcomes.onError(this.readySeen, m.code);
        this.toClient.push(frame.bytes);
        return;
      }
      default:
        this.toClient.push(frame.bytes);
    }
  }

  /** A message that ends or describes a result: forwarded unless a row cap replaces it. */
  private forwardResultMessage(frame: Frame): void {
    const replacement = this.rowCaps.onResultMessage(this.readySeen);
    if (replacement) for (const m of replacement) this.toClient.push(m);
    else this.toClient.push(frame.bytes);
  }

  /**
   * Channel binding cannot pass through a proxy that terminates or originates TLS itself (the
   * binding data is the TLS endpoint's certificate), so SCRAM-SHA-256-PLUS is removed from the
   * mechanisms the server offers; plain SCRAM-SHA-256 still authenticates end to end.
   */
  private rewriteAuthentication(frame: Frame): Buffer {
    if (authCode(frame) !== AuthCode.SASL) return frame.bytes;
    if (this.channelBindingPassesThrough()) return frame.bytes;
    const m = decodeBackendMessage(frame) as unknown as { mechanisms: string[] };
    const usable = m.mechanisms.filter((name) => !name.endsWith('-PLUS'));
    if (usable.length === m.mechanisms.length) return frame.bytes;
    return encodeAuthenticationSASL(usable);
  }

  /**
   * tls-server-end-point binds SCRAM to the hash of the certificate the client saw: when the
   * proxy presents the very certificate the upstream presents, the client's binding data equals
   * the server's and SCRAM-SHA-256-PLUS can be offered unchanged.
   */
  private channelBindingPassesThrough(): boolean {
    const client = this.client;
    const upstream = this.upstream;
    if (!(client instanceof tls.TLSSocket) || !(upstream instanceof tls.TLSSocket)) return false;
    const ours = client.getCertificate();
    const theirs = upstream.getPeerCertificate();
    if (!ours || !('raw' in ours) || !Buffer.isBuffer(ours.raw) || !Buffer.isBuffer(theirs.raw)) return false;
    return ours.raw.equals(theirs.raw);
  }

  private issueBackendKey(frame: Frame): Buffer {
    const upstreamKey = decodeBackendKeyData(frame);
    this.upstreamKey = upstreamKey;
    if (this.ourProcessId !== null) this.deps.cancelKeys.release(this.ourProcessId);
    const ours = this.deps.cancelKeys.issue(this, Math.max(4, upstreamKey.secretKey.length));
    this.ourProcessId = ours.processId;
    return encodeBackendKeyData(ours.processId, ours.secretKey);
  }

  /**
   * The first ReadyForQuery after authentication is held while pgwarden asks the server for the
   * session's search_path: ALTER ROLE/DATABASE ... SET search_path is applied by the server and
   * never reported in ParameterStatus, yet decides which table an unqualified name is.
   */
  private startProbe(firstReady: Frame): void {
    this.phase = 'probing';
    this.heldReady = Buffer.from(firstReady.bytes);
    this.upstream?.write(SHOW_SEARCH_PATH);
  }

  private onProbeFrame(frame: Frame): void {
    if (frame.tag === BackendTag.DataRow) {
      const row = decodeBackendMessage(frame) as unknown as { fields: (string | null)[] };
      const value = row.fields[0];
      if (typeof value === 'string') this.serverParams.set('search_path', value);
      return;
    }
    if (frame.tag !== BackendTag.ReadyForQuery) return; // RowDescription, CommandComplete, an error
    this.onAuthenticated();
    if (this.heldReady) this.toClient.push(this.heldReady);
    this.heldReady = null;
    setImmediate(() => this.pumpClient());
  }

  private onAuthenticated(): void {
    this.phase = 'ready';
    this.wasReady = true;
    this.deps.judge.opened?.(this);
    if (this.startupTimer) clearTimeout(this.startupTimer);
    this.startupTimer = null;
    this.log.debug('session ready');
  }

  private readonly onUpstreamClose = (): void => {
    if (this.phase !== 'closed' && !this.serverSentFatal) {
      this.fail(pgError.upstreamClosed());
      return;
    }
    // The server already told the client why (e.g. authentication failed): deliver and close.
    this.endReason = this.serverFatalCode ?? 'server-disconnected';
    this.flushClient();
    this.phase = 'closed';
    this.client.end();
    this.cleanup();
  };

  // ---- cancel, shutdown, close ----

  /** Sends the client a NoticeResponse now: the protocol allows one at any time ("Asynchronous Operations"). */
  notify(notice: PgErrorFields): void {
    if (this.phase !== 'ready') return;
    this.toClient.push(encodeNoticeResponse(notice));
    this.flushClient();
  }

  /** A CancelRequest carrying our key arrived: withdraw a pending decision and cancel upstream. */
  cancel(): void {
    this.decisionAbort?.abort();
    const key = this.upstreamKey;
    if (!key) return;
    this.log.info('cancel request forwarded to upstream');
    sendUpstreamCancel(this.deps.upstream, key, this.log);
  }

  /** Graceful shutdown: end the session now if idle, else once its statement/transaction ends. */
  shutdown(): void {
    this.shuttingDown = true;
    if (this.isIdle) this.shutdownNow();
  }

  private shutdownNow(): void {
    this.fail(pgError.terminatedByShutdown());
  }

  /** Ends the session with a FATAL error the client can read. */
  fail(error: PgErrorFields): void {
    if (this.phase === 'closed') return;
    this.endReason = error.code;
    this.flushClient();
    this.phase = 'closed';
    if (!this.client.destroyed) this.client.end(encodeErrorResponse(error));
    this.endUpstream();
    this.cleanup();
  }

  close(): void {
    if (this.phase !== 'closed') {
      this.phase = 'closed';
      if (!this.client.destroyed) this.client.end();
      this.endUpstream();
    }
    this.cleanup();
  }

  private endUpstream(): void {
    if (this.upstream && !this.upstream.destroyed) this.upstream.end(TERMINATE);
  }

  private cleaned = false;
  private cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    if (this.startupTimer) clearTimeout(this.startupTimer);
    this.decisionAbort?.abort();
    if (this.ourProcessId !== null) this.deps.cancelKeys.release(this.ourProcessId);
    // Sockets that do not close on their own after end() are destroyed shortly after.
    const client = this.client;
    const upstream = this.upstream;
    setTimeout(() => {
      client.destroy();
      upstream?.destroy();
    }, 1000).unref();
    this.maskWindows.drain();
    if (this.identity) this.deps.agents?.unregister(this);
    this.outcomes.abandon(this.endReason === 'client-disconnected' || this.endReason === 'client-terminated' ? '08006' : this.endReason);
    if (this.startupSeen) {
      try {
        this.deps.judge.closed?.(this, { authenticated: this.wasReady, reason: this.endReason });
      } catch (err) {
        this.log.error({ err }, 'closed() hook failed');
      }
    }
    this.log.info('client disconnected');
    this.deps.onClose(this);
  }
}

const TERMINATE = new Writer().flush(FrontendTag.Terminate);

const SHOW_SEARCH_PATH = new Writer().addCString('SHOW search_path').flush(FrontendTag.Query);

/** A Query that always fails (division by zero), used to put the server's transaction into the failed state. */
const ABORT_TRANSACTION = new Writer().addCString('SELECT 1/0 -- pgwarden: a statement in this transaction was refused').flush(FrontendTag.Query);

/** A role name as a quoted identifier (SET ROLE takes an identifier, never a literal). */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** CancelRequest to the upstream server on a new connection ("Canceling Requests in Progress"). */
function sendUpstreamCancel(target: UpstreamTarget, key: { processId: number; secretKey: Buffer }, log: Logger): void {
  const packet = encodeCancelRequest(key.processId, key.secretKey);
  connectUpstream(target).then(
    (socket) => {
      socket.on('error', () => socket.destroy());
      socket.end(packet);
      socket.resume();
    },
    (err: unknown) => log.warn({ message: (err as Error).message }, 'could not deliver cancel request upstream'),
  );
}
