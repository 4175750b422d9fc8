import Messaging
import Testing

@testable import RabbitMQMessaging

@Suite struct ConnectionLifecycleTests {
    static let t0 = ContinuousClock.now
    /// 100 ms doubling to 400 ms, no jitter: the delays are exact.
    static let backoff = RabbitMQConfiguration.Backoff(
        initialDelay: .milliseconds(100), maximumDelay: .milliseconds(400), multiplier: 2, jitter: 0)
    static let lost = MessagingError(.connectionLost, "socket closed", isRetryable: true)
    static let refused = MessagingError(.unreachable, "connection refused", isRetryable: true)

    static func at(_ milliseconds: Int) -> ContinuousClock.Instant { t0 + .milliseconds(milliseconds) }

    @Test func aLostConnectionReconnectsWithGrowingDelaysAndANewGeneration() {
        var lifecycle = ConnectionLifecycle(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        let step1 = lifecycle.opened()
        #expect(step1 == 1)
        #expect(lifecycle.phase == .connected)
        let step2 = lifecycle.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        #expect(step2)
        // A loss is handled once.
        let step3 = lifecycle.lost(Self.lost, now: Self.at(1), unitRandom: 0)
        #expect(!step3)
        #expect(lifecycle.phase == .disconnected)
        #expect(lifecycle.lastFailure == Self.lost)
        let step4 = lifecycle.nextStep(now: Self.at(50))
        #expect(step4 == .wait(until: Self.at(100)))
        let step5 = lifecycle.nextStep(now: Self.at(100))
        #expect(step5 == .connect)
        #expect(lifecycle.attempt == 1)
        // Failed attempts wait 200, then 400, then 400 ms (the maximum).
        let step6 = lifecycle.attemptFailed(Self.refused, now: Self.at(100), unitRandom: 0)
        #expect(step6 == .wait(until: Self.at(300)))
        #expect(lifecycle.lastFailure == Self.refused)
        let step7 = lifecycle.nextStep(now: Self.at(300))
        #expect(step7 == .connect)
        let step8 = lifecycle.attemptFailed(Self.refused, now: Self.at(300), unitRandom: 0)
        #expect(step8 == .wait(until: Self.at(700)))
        let step9 = lifecycle.nextStep(now: Self.at(700))
        #expect(step9 == .connect)
        let step10 = lifecycle.attemptFailed(Self.refused, now: Self.at(700), unitRandom: 0)
        #expect(step10 == .wait(until: Self.at(1_100)))
        let step11 = lifecycle.nextStep(now: Self.at(1_100))
        #expect(step11 == .connect)
        let step12 = lifecycle.opened()
        #expect(step12 == 2)
        let (attempts, downtime) = lifecycle.reconnected(now: Self.at(1_150))
        #expect(attempts == 4)
        #expect(downtime == .milliseconds(1_150))
        #expect(lifecycle.attempt == 0)
        #expect(lifecycle.lastFailure == nil)
        // The next loss starts the backoff from its first delay again.
        let step13 = lifecycle.lost(Self.lost, now: Self.at(2_000), unitRandom: 0)
        #expect(step13)
        let step14 = lifecycle.nextStep(now: Self.at(2_000))
        #expect(step14 == .wait(until: Self.at(2_100)))
    }

    @Test func reconnectingEndsAfterTheMaximumAttempts() {
        var lifecycle = ConnectionLifecycle(backoff: Self.backoff, maximumAttempts: 2, now: Self.t0)
        _ = lifecycle.opened()
        _ = lifecycle.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        let step15 = lifecycle.nextStep(now: Self.at(100))
        #expect(step15 == .connect)
        let step16 = lifecycle.attemptFailed(Self.refused, now: Self.at(100), unitRandom: 0)
        #expect(step16 == .wait(until: Self.at(300)))
        let step17 = lifecycle.nextStep(now: Self.at(300))
        #expect(step17 == .connect)
        let step18 = lifecycle.attemptFailed(Self.refused, now: Self.at(300), unitRandom: 0)
        #expect(step18 == .giveUp)
        #expect(lifecycle.attempt == 2)
        #expect(lifecycle.lastFailure == Self.refused)
        let step19 = lifecycle.nextStep(now: Self.at(10_000))
        #expect(step19 == .giveUp)
        lifecycle.finished()
        #expect(lifecycle.phase == .finished)
    }

    @Test func jitterShortensTheDelay() {
        var lifecycle = ConnectionLifecycle(
            backoff: .init(initialDelay: .milliseconds(100), maximumDelay: .seconds(1), multiplier: 2, jitter: 0.5),
            maximumAttempts: nil, now: Self.t0)
        _ = lifecycle.opened()
        _ = lifecycle.lost(Self.lost, now: Self.at(0), unitRandom: 0.5)
        let step20 = lifecycle.nextStep(now: Self.at(0))
        #expect(step20 == .wait(until: Self.at(75)))
    }

    @Test func aCloseWhileDisconnectedFinishesAtOnce() {
        var lifecycle = ConnectionLifecycle(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        _ = lifecycle.opened()
        _ = lifecycle.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        lifecycle.requestClose()
        let step21 = lifecycle.nextStep(now: Self.at(1))
        #expect(step21 == .finish)
        #expect(lifecycle.attempt == 0)
    }

    @Test func blockingAndChannelGenerationsFollowTheConnection() {
        var lifecycle = ConnectionLifecycle(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        let step22 = lifecycle.opened()
        #expect(step22 == 1)
        lifecycle.setBlocked(true)
        #expect(lifecycle.isBlocked)
        // A reopened consuming channel makes earlier delivery tags stale.
        let step23 = lifecycle.consumingChannelReopened()
        #expect(step23 == 2)
        // A new connection is never blocked, and a dropped setup does not count as a loss.
        let step24 = lifecycle.opened()
        #expect(step24 == 3)
        #expect(!lifecycle.isBlocked)
        lifecycle.setBlocked(true)
        lifecycle.dropped()
        #expect(lifecycle.phase == .disconnected)
        #expect(!lifecycle.isBlocked)
        let step25 = lifecycle.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        #expect(!step25)
    }
}
