import Messaging
import Testing

@testable import RabbitMQMessaging

@Suite struct ConnectionStateMachineTests {
    static let t0 = ContinuousClock.now
    /// 100 ms doubling to 400 ms, no jitter: the delays are exact.
    static let backoff = RabbitMQConfiguration.Backoff(
        initialDelay: .milliseconds(100), maximumDelay: .milliseconds(400), multiplier: 2, jitter: 0)
    static let lost = MessagingError(.connectionLost, "socket closed", isRetryable: true)
    static let refused = MessagingError(.unreachable, "connection refused", isRetryable: true)

    static func at(_ milliseconds: Int) -> ContinuousClock.Instant { t0 + .milliseconds(milliseconds) }

    @Test func aLostConnectionReconnectsWithGrowingDelaysAndANewGeneration() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        let step1 = machine.opened()
        #expect(step1 == 1)
        #expect(machine.phase == .connected)
        let step2 = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        #expect(step2)
        // A loss is handled once.
        let step3 = machine.lost(Self.lost, now: Self.at(1), unitRandom: 0)
        #expect(!step3)
        #expect(machine.phase == .disconnected)
        #expect(machine.lastFailure == Self.lost)
        let step4 = machine.nextStep(now: Self.at(50))
        #expect(step4 == .wait(until: Self.at(100)))
        let step5 = machine.nextStep(now: Self.at(100))
        #expect(step5 == .connect)
        #expect(machine.attempt == 1)
        // Failed attempts wait 200, then 400, then 400 ms (the maximum).
        let step6 = machine.attemptFailed(Self.refused, now: Self.at(100), unitRandom: 0)
        #expect(step6 == .wait(until: Self.at(300)))
        #expect(machine.lastFailure == Self.refused)
        let step7 = machine.nextStep(now: Self.at(300))
        #expect(step7 == .connect)
        let step8 = machine.attemptFailed(Self.refused, now: Self.at(300), unitRandom: 0)
        #expect(step8 == .wait(until: Self.at(700)))
        let step9 = machine.nextStep(now: Self.at(700))
        #expect(step9 == .connect)
        let step10 = machine.attemptFailed(Self.refused, now: Self.at(700), unitRandom: 0)
        #expect(step10 == .wait(until: Self.at(1_100)))
        let step11 = machine.nextStep(now: Self.at(1_100))
        #expect(step11 == .connect)
        let step12 = machine.opened()
        #expect(step12 == 2)
        let (attempts, downtime) = machine.reconnected(now: Self.at(1_150))
        #expect(attempts == 4)
        #expect(downtime == .milliseconds(1_150))
        #expect(machine.attempt == 0)
        #expect(machine.lastFailure == nil)
        // The next loss starts the backoff from its first delay again.
        let step13 = machine.lost(Self.lost, now: Self.at(2_000), unitRandom: 0)
        #expect(step13)
        let step14 = machine.nextStep(now: Self.at(2_000))
        #expect(step14 == .wait(until: Self.at(2_100)))
    }

    @Test func reconnectingEndsAfterTheMaximumAttempts() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: 2, now: Self.t0)
        _ = machine.opened()
        _ = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        let step15 = machine.nextStep(now: Self.at(100))
        #expect(step15 == .connect)
        let step16 = machine.attemptFailed(Self.refused, now: Self.at(100), unitRandom: 0)
        #expect(step16 == .wait(until: Self.at(300)))
        let step17 = machine.nextStep(now: Self.at(300))
        #expect(step17 == .connect)
        let step18 = machine.attemptFailed(Self.refused, now: Self.at(300), unitRandom: 0)
        #expect(step18 == .giveUp)
        #expect(machine.attempt == 2)
        #expect(machine.lastFailure == Self.refused)
        let step19 = machine.nextStep(now: Self.at(10_000))
        #expect(step19 == .giveUp)
        machine.finished()
        #expect(machine.phase == .finished)
    }

    @Test func jitterShortensTheDelay() {
        var machine = ConnectionStateMachine(
            backoff: .init(initialDelay: .milliseconds(100), maximumDelay: .seconds(1), multiplier: 2, jitter: 0.5),
            maximumAttempts: nil, now: Self.t0)
        _ = machine.opened()
        _ = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0.5)
        let step20 = machine.nextStep(now: Self.at(0))
        #expect(step20 == .wait(until: Self.at(75)))
    }

    @Test func aCloseWhileDisconnectedFinishesAtOnce() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        _ = machine.opened()
        _ = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        machine.requestClose()
        let step21 = machine.nextStep(now: Self.at(1))
        #expect(step21 == .finish)
        #expect(machine.attempt == 0)
    }

    @Test func blockingAndChannelGenerationsFollowTheConnection() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        let step22 = machine.opened()
        #expect(step22 == 1)
        machine.setBlocked(true)
        #expect(machine.isBlocked)
        // A reopened consuming channel makes earlier delivery tags stale.
        #expect(machine.brokerClosed(channel: AMQPChannel.consume) == .acknowledgeAndReopen(failsPublishes: false))
        let step23 = machine.nextReopening()
        #expect(step23?.reopening == .consuming(generation: 2))
        // A new connection is never blocked, and a dropped setup does not count as a loss.
        let step24 = machine.opened()
        #expect(step24 == 3)
        #expect(!machine.isBlocked)
        machine.setBlocked(true)
        machine.dropped()
        #expect(machine.phase == .disconnected)
        #expect(!machine.isBlocked)
        let step25 = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        #expect(!step25)
    }

    @Test func eachRoundTriesEveryNodeOnceStartingAfterTheOneThatFailed() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, nodeCount: 3, now: Self.t0)
        #expect(machine.openingOrder == [0, 1, 2])
        _ = machine.opened(through: 1)
        #expect(machine.nodeIndex == 1)
        // The node connected through may be the one that failed: the next round starts after it.
        _ = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        #expect(machine.openingOrder == [2, 0, 1])
        // A round in which every node failed moves the start on too.
        machine.roundFailed()
        #expect(machine.openingOrder == [0, 1, 2])
        // A setup dropped half-way is not a loss: the start stays.
        _ = machine.opened(through: 0)
        machine.dropped()
        #expect(machine.openingOrder == [0, 1, 2])
    }

    @Test func aChannelTheBrokerClosedIsAnsweredOnceAndReopenedLowestFirst() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        // Before a connection there is nothing to answer.
        #expect(machine.brokerClosed(channel: AMQPChannel.publish) == .ignoreRepeated)
        let first = machine.opened()
        #expect(machine.brokerClosed(channel: AMQPChannel.publish) == .acknowledgeAndReopen(failsPublishes: true))
        // RabbitMQ 3.10.8 sends a second close for one consumer timeout: a second close-ok would
        // cost the connection.
        #expect(machine.brokerClosed(channel: AMQPChannel.publish) == .ignoreRepeated)
        #expect(machine.brokerClosed(channel: AMQPChannel.consume) == .acknowledgeAndReopen(failsPublishes: false))
        #expect(machine.brokerClosed(channel: AMQPChannel.consume) == .ignoreRepeated)
        #expect(!machine.mayIdle(framesBuffered: false, publishesWaiting: false))
        let consume = machine.nextReopening()
        #expect(consume?.channel == AMQPChannel.consume)
        #expect(consume?.reopening == .consuming(generation: first + 1))
        #expect(machine.generation == first + 1)
        let publish = machine.nextReopening()
        #expect(publish?.channel == AMQPChannel.publish)
        #expect(publish?.reopening == .publishing)
        #expect(machine.generation == first + 1)
        #expect(machine.nextReopening() == nil)
        #expect(machine.mayIdle(framesBuffered: false, publishesWaiting: false))
        // Once reopened, a new close is answered again.
        #expect(machine.brokerClosed(channel: AMQPChannel.publish) == .acknowledgeAndReopen(failsPublishes: true))
        // A lost connection forgets the channels: a new connection opens all of them.
        _ = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        #expect(machine.channelsToReopen.isEmpty)
        #expect(machine.nextReopening() == nil)
    }

    @Test func aFailedCallCostsTheConnectionOrOnlyItsChannel() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        _ = machine.opened()
        #expect(machine.callFailed(.library(status: .socketError)) == .loseConnection)
        #expect(machine.callFailed(.connectionClosed(code: 320, text: "CONNECTION_FORCED")) == .loseConnection)
        // Declarations run several admin calls in a row: the admin channel is reopened at once.
        let admin = machine.callFailed(.channelClosed(channel: AMQPChannel.admin, code: 404, text: "NOT_FOUND"))
        #expect(admin == .reopenNow(channel: AMQPChannel.admin))
        #expect(machine.channelsToReopen.isEmpty)
        let consume = machine.callFailed(.channelClosed(channel: AMQPChannel.consume, code: 406, text: "PRECONDITION"))
        #expect(consume == .reopenBeforeNextTurn(channel: AMQPChannel.consume, failsPublishes: false))
        let publish = machine.callFailed(.channelClosed(channel: AMQPChannel.publish, code: 404, text: "NOT_FOUND"))
        #expect(publish == .reopenBeforeNextTurn(channel: AMQPChannel.publish, failsPublishes: true))
        #expect(machine.channelsToReopen == [AMQPChannel.consume, AMQPChannel.publish])
    }

    @Test func onlyTagsOfTheCurrentConnectionAndConsumingChannelAreAcknowledged() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        #expect(!machine.isCurrent(DeliveryTag(generation: 0, value: 1)))
        let first = machine.opened()
        let tag = DeliveryTag(generation: first, value: 7)
        #expect(machine.isCurrent(tag))
        // A no-ack delivery carries generation 0 and is never acknowledged on the channel.
        #expect(!machine.isCurrent(DeliveryTag(generation: 0, value: 7)))
        _ = machine.brokerClosed(channel: AMQPChannel.consume)
        _ = machine.nextReopening()
        #expect(!machine.isCurrent(tag))
        #expect(machine.isCurrent(DeliveryTag(generation: machine.generation, value: 1)))
        _ = machine.lost(Self.lost, now: Self.at(0), unitRandom: 0)
        let second = machine.opened()
        #expect(!machine.isCurrent(DeliveryTag(generation: second - 1, value: 1)))
    }

    @Test func commandsRunWhileConnectedAndWaitOrEndLocallyWhileNot() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        let kinds: [ConnectionStateMachine.CommandKind] = [.publish, .acknowledgement, .cancel, .close, .call]
        let disconnected = kinds.map { machine.disposition(of: $0) }
        #expect(
            disconnected == [
                .holdPublish, .dropAcknowledgement, .endConsumerLocally, .close, .deferUntilConnected,
            ])
        _ = machine.opened()
        #expect(kinds.allSatisfy { machine.disposition(of: $0) == .execute })
        machine.requestClose()
        #expect(kinds.allSatisfy { machine.disposition(of: $0) == .failClosing })
    }

    @Test func theLoopSleepsOnlyWhenNothingCanBeDoneAtOnce() {
        var machine = ConnectionStateMachine(backoff: Self.backoff, maximumAttempts: nil, now: Self.t0)
        _ = machine.opened()
        #expect(machine.mayIdle(framesBuffered: false, publishesWaiting: false))
        #expect(!machine.mayIdle(framesBuffered: true, publishesWaiting: false))
        #expect(!machine.mayIdle(framesBuffered: false, publishesWaiting: true))
        // Blocked publishers: waiting publishes cannot be written, so they do not keep it awake.
        machine.setBlocked(true)
        #expect(!machine.mayPublish)
        #expect(machine.mayIdle(framesBuffered: false, publishesWaiting: true))
        machine.setBlocked(false)
        #expect(machine.mayPublish)
    }
}
