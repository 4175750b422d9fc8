/// Bookkeeping of publisher confirms on one confirm-mode channel: a pure state machine, so its rules
/// are unit-tested without a broker.
///
/// The broker numbers the publishes of a confirm-mode channel 1, 2, 3, … and later acks or nacks
/// them, possibly out of order and possibly several at once (`multiple`: everything up to the tag).
/// A mandatory message that no queue takes comes back as `basic.return` *before* its ack; the
/// return carries no sequence number, so it is matched to the oldest outstanding mandatory publish
/// with the same exchange, routing key, message id and body (returns arrive in publish order), and
/// that publish then fails as unroutable when its ack arrives.
///
/// When the broker closes the channel because of a publish (404 for a missing exchange, 403 for one
/// the user may not write to), the close names no sequence number. The tracker blames the
/// outstanding publishes to exchanges it has not seen accept a publish (or that were declared on the
/// connection): those fail with the broker's error, the rest as retryable. The knowledge is
/// forgotten for every exchange involved, so when an exchange that once existed is deleted, the
/// retry of its publish is blamed. No decision reads the broker's text.
///
/// `Waiter` is whatever resumes the caller (a continuation on the I/O thread, a value in tests).
/// Every operation is amortised O(1) per publish, except matching a return, which is O(outstanding).
struct PublishConfirmTracker<Waiter> {
    /// What a publish ended with.
    enum Outcome: Equatable {
        /// The broker acked it.
        case confirmed
        /// The broker nacked it.
        case nacked
        /// The broker returned it (mandatory and unroutable) and then acked it.
        case returned(replyCode: UInt16, replyText: String)
    }

    /// A publish awaiting its confirm.
    struct Entry {
        /// Resumes the caller.
        var waiter: Waiter
        /// Where it was published.
        var exchange: String
        /// Its routing key.
        var routingKey: String
        /// Whether it was published as mandatory.
        var mandatory: Bool
        /// Its message id (to match returns).
        var messageID: String?
        /// Its body (to match returns; shares storage with the caller's array).
        var body: [UInt8]
        /// When the caller stops waiting.
        var deadline: ContinuousClock.Instant
        /// Set when a `basic.return` matched this publish.
        var returned: (replyCode: UInt16, replyText: String)?
    }

    /// The sequence number the next publish gets.
    private(set) var nextSequence: UInt64 = 1
    private var entries: [UInt64: Entry] = [:]
    /// Every sequence number below this one is settled.
    private var lowestUnsettled: UInt64 = 1
    /// Exchanges known to exist: one of their publishes was acked, or they were declared.
    private var knownExchanges: Set<String> = []

    /// Whether `exchange` is known to exist: the default exchange and the `amq.` exchanges always
    /// do (the broker does not let them be deleted).
    func isKnown(exchange: String) -> Bool {
        exchange.isEmpty || exchange.hasPrefix("amq.") || knownExchanges.contains(exchange)
    }

    /// Records that `exchange` exists (it was just declared).
    mutating func exchangeExists(_ exchange: String) {
        knownExchanges.insert(exchange)
    }

    /// Records that `exchange` no longer exists (it was just deleted).
    mutating func exchangeDeleted(_ exchange: String) {
        knownExchanges.remove(exchange)
    }

    /// Creates an empty tracker for a channel that was just put in confirm mode.
    init() {}

    /// The number of publishes awaiting a confirm.
    var outstanding: Int { entries.count }

    /// Records a publish that was just written to the channel and returns its sequence number.
    mutating func recordPublished(_ entry: Entry) -> UInt64 {
        let sequence = nextSequence
        nextSequence += 1
        entries[sequence] = entry
        return sequence
    }

    /// Settles publishes on `basic.ack` (`acked` true) or `basic.nack`: the one with `deliveryTag`,
    /// or every outstanding one up to it when `multiple` is set. Unknown tags (already settled or
    /// timed out) are ignored.
    mutating func settle(deliveryTag: UInt64, multiple: Bool, acked: Bool) -> [(Waiter, Outcome)] {
        var settled: [(Waiter, Outcome)] = []
        func outcome(_ entry: Entry) -> Outcome {
            guard acked else { return .nacked }
            knownExchanges.insert(entry.exchange)
            if let returned = entry.returned {
                return .returned(replyCode: returned.replyCode, replyText: returned.replyText)
            }
            return .confirmed
        }
        if multiple {
            let upper = min(deliveryTag, nextSequence - 1)
            if lowestUnsettled <= upper {
                for sequence in lowestUnsettled...upper {
                    if let entry = entries.removeValue(forKey: sequence) {
                        settled.append((entry.waiter, outcome(entry)))
                    }
                }
                lowestUnsettled = upper + 1
            }
        } else if let entry = entries.removeValue(forKey: deliveryTag) {
            settled.append((entry.waiter, outcome(entry)))
        }
        advanceLowest()
        return settled
    }

    /// Marks the oldest outstanding mandatory publish that matches a `basic.return` as returned.
    /// Returns false when none matches (it may have timed out already).
    mutating func markReturned(
        exchange: String, routingKey: String, messageID: String?, body: [UInt8], replyCode: UInt16,
        replyText: String
    ) -> Bool {
        guard lowestUnsettled < nextSequence else { return false }
        for sequence in lowestUnsettled..<nextSequence {
            guard let entry = entries[sequence], entry.mandatory, entry.returned == nil,
                entry.exchange == exchange, entry.routingKey == routingKey, entry.messageID == messageID,
                entry.body == body
            else { continue }
            entries[sequence]?.returned = (replyCode, replyText)
            return true
        }
        return false
    }

    /// Removes the publishes whose deadline has passed, oldest first. Deadlines grow with sequence
    /// numbers (publishes are sent in submission order with one timeout), so the scan stops at the
    /// first publish that is still in time.
    mutating func expire(now: ContinuousClock.Instant) -> [Waiter] {
        var expired: [Waiter] = []
        while lowestUnsettled < nextSequence {
            if let entry = entries[lowestUnsettled] {
                guard entry.deadline <= now else { break }
                entries[lowestUnsettled] = nil
                expired.append(entry.waiter)
            }
            lowestUnsettled += 1
        }
        return expired
    }

    /// The deadline of the oldest outstanding publish.
    var earliestDeadline: ContinuousClock.Instant? {
        lowestUnsettled < nextSequence ? entries[lowestUnsettled]?.deadline : nil
    }

    /// Removes every outstanding publish and starts numbering from 1 again, as a new or reopened
    /// channel does. Returns the entries, oldest first.
    mutating func reset() -> [Entry] {
        let removed = entries.sorted { $0.key < $1.key }.map(\.value)
        entries = [:]
        nextSequence = 1
        lowestUnsettled = 1
        return removed
    }

    /// The broker closed the channel with `code`: removes every outstanding publish, as
    /// ``reset()`` does, and says for each whether it is blamed for the close. For 403 and 404 (what a
    /// publish to a missing or forbidden exchange causes) the publishes to exchanges not known to
    /// exist are blamed; the exchanges of all of them are then no longer known. Other codes blame no
    /// publish.
    mutating func channelClosed(code: UInt16) -> [(entry: Entry, blamed: Bool)] {
        let removed = reset()
        guard code == 403 || code == 404 else { return removed.map { ($0, false) } }
        let blamed = removed.map { ($0, !isKnown(exchange: $0.exchange)) }
        for entry in removed { knownExchanges.remove(entry.exchange) }
        return blamed
    }

    private mutating func advanceLowest() {
        while lowestUnsettled < nextSequence, entries[lowestUnsettled] == nil {
            lowestUnsettled += 1
        }
    }
}
