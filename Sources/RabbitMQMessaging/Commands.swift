import Messaging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Resumes an async caller with the result of a command run on the I/O thread.
typealias Reply<T> = CheckedContinuation<Result<T, MessagingError>, Never>

/// A consumer as the application asked for it; kept to re-register it after a reconnect.
struct ConsumerRequest: Sendable {
    /// The queue to consume.
    var queue: String
    /// The per-consumer prefetch (`basic.qos`, global = false).
    var prefetch: UInt16
    /// The consumer tag.
    var tag: String
    /// `basic.consume` arguments.
    var arguments: [String: HeaderValue]
    /// No-ack mode: the broker counts each message acknowledged when it sends it.
    var autoAcknowledge = false
    /// Where deliveries go.
    var continuation: AsyncThrowingStream<Delivery, any Error>.Continuation
}

/// A message to publish and the caller waiting for its confirm.
struct PublishRequest: Sendable {
    /// The message.
    var message: OutgoingMessage
    /// Resumed on ack, nack, return, timeout or connection loss.
    var reply: Reply<Void>
    /// When the caller stops waiting (submission time + publish timeout).
    var deadline: ContinuousClock.Instant
}

/// What async callers ask the I/O thread to do.
enum Command: Sendable {
    case publish(PublishRequest)
    case declare(Topology, Reply<Void>)
    case consume(ConsumerRequest, Reply<Void>)
    case cancel(consumerTag: String, Reply<Void>?)
    case ack(DeliveryTag, Reply<Void>)
    case reject(DeliveryTag, requeue: Bool, Reply<Void>)
    case inspectQueue(String, Reply<RabbitMQQueueStatus>)
    case deleteQueue(String, ifUnused: Bool, ifEmpty: Bool, Reply<UInt32>)
    case deleteExchange(String, ifUnused: Bool, Reply<Void>)
    case close

    /// The command's kind, as the connection's rules see it.
    var kind: ConnectionStateMachine.CommandKind {
        switch self {
        case .publish: .publish
        case .ack, .reject: .acknowledgement
        case .cancel: .cancel
        case .close: .close
        case .declare, .consume, .inspectQueue, .deleteQueue, .deleteExchange: .call
        }
    }

    /// Resumes the caller with `error` (and ends a consumer's stream with it).
    func fail(_ error: MessagingError) {
        switch self {
        case .publish(let request): request.reply.resume(returning: .failure(error))
        case .consume(let request, let reply):
            request.continuation.finish(throwing: error)
            reply.resume(returning: .failure(error))
        case .declare(_, let reply), .ack(_, let reply), .reject(_, _, let reply), .deleteExchange(_, _, let reply):
            reply.resume(returning: .failure(error))
        case .cancel(_, let reply): reply?.resume(returning: .failure(error))
        case .inspectQueue(_, let reply): reply.resume(returning: .failure(error))
        case .deleteQueue(_, _, _, let reply): reply.resume(returning: .failure(error))
        case .close: break
        }
    }
}

/// A command and when it was submitted (calls made while disconnected time out from then).
struct QueuedCommand: Sendable {
    /// The command.
    var command: Command
    /// When it was submitted.
    var submitted: ContinuousClock.Instant
}

/// The lock-protected queue through which async callers hand commands to the I/O thread, with a
/// pipe that wakes the thread from `poll()` as soon as a command arrives.
///
/// Only the first command after the thread emptied the queue writes to the pipe, so a burst of
/// publishes costs one `write` and one wake-up.
final class CommandQueue: Sendable {
    private struct State {
        var commands: [QueuedCommand] = []
        var isOpen = true
        var wakePending = false
    }

    private let state = LockedValue(State())
    private let readDescriptor: Int32
    private let writeDescriptor: Int32

    /// Creates a queue and its wake-up pipe.
    init() throws(MessagingError) {
        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else {
            throw MessagingError(
                .protocolError, "cannot create the wake-up pipe of the I/O thread: errno \(errno)", isRetryable: false)
        }
        for descriptor in descriptors {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
        readDescriptor = descriptors[0]
        writeDescriptor = descriptors[1]
    }

    deinit {
        close(readDescriptor)
        close(writeDescriptor)
    }

    /// The descriptor to poll for wake-ups.
    var wakeDescriptor: Int32 { readDescriptor }

    /// Queues a command and wakes the I/O thread. Returns false when the queue is shut down.
    func submit(_ command: Command) -> Bool {
        state.withLock { state in
            guard state.isOpen else { return false }
            state.commands.append(QueuedCommand(command: command, submitted: .now))
            if !state.wakePending {
                state.wakePending = true
                var byte: UInt8 = 1
                _ = write(writeDescriptor, &byte, 1)
            }
            return true
        }
    }

    /// Takes every queued command. Clears the wake-up first, so a command submitted afterwards
    /// wakes the thread again.
    func takeAll() -> [QueuedCommand] {
        state.withLock { state in
            if state.wakePending {
                state.wakePending = false
                var buffer = [UInt8](repeating: 0, count: 64)
                while read(readDescriptor, &buffer, buffer.count) > 0 {}
            }
            defer { state.commands.removeAll(keepingCapacity: true) }
            return state.commands
        }
    }

    /// Refuses further commands and returns those still queued.
    func shutDown() -> [QueuedCommand] {
        state.withLock { state in
            state.isOpen = false
            defer { state.commands = [] }
            return state.commands
        }
    }
}

/// The state of a transport as other threads see it; written by the I/O thread.
final class TransportStatus: Sendable {
    /// A consistent view of the status.
    struct Snapshot: Sendable {
        /// Connected, with channels open.
        var isConnected = false
        /// Every declared topology item was (re)declared on this connection.
        var topologyInPlace = true
        /// The broker blocked publishing (`connection.blocked`).
        var isBlocked = false
        /// The generation that delivery tags currently carry.
        var generation: UInt64 = 0
        /// The I/O thread has ended.
        var isTerminated = false
        /// Why it ended, when the application did not close the transport (it gave up reconnecting).
        var terminalError: MessagingError?
        /// The deadline of the oldest publish still waiting to be sent or confirmed (its submission
        /// time plus the publish timeout); nil when none waits.
        var oldestPublishDeadline: ContinuousClock.Instant?
    }

    private struct State {
        var snapshot = Snapshot()
        var terminationWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = LockedValue(State())

    /// Creates a status for a transport that is not connected yet.
    init() {}

    /// The current status.
    var snapshot: Snapshot { state.withLock { $0.snapshot } }

    /// Changes the status.
    func update(_ change: (inout Snapshot) -> Void) {
        state.withLock { change(&$0.snapshot) }
    }

    /// Records that the I/O thread has ended (with `error` unless the application closed the
    /// transport) and resumes everyone waiting for that.
    func terminate(error: MessagingError?) {
        let waiters = state.withLock { state in
            state.snapshot.isTerminated = true
            state.snapshot.terminalError = error
            state.snapshot.isConnected = false
            defer { state.terminationWaiters = [] }
            return state.terminationWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the I/O thread has ended.
    func waitForTermination() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.snapshot.isTerminated { return true }
                state.terminationWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
