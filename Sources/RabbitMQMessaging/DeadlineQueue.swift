/// A first-in first-out queue whose elements expire: the publishes and calls that wait while the
/// connection is down or the broker blocks publishers. Pure, so its rules are unit-tested.
///
/// Elements are appended in submission order with one timeout, so their deadlines do not decrease
/// from front to back: the front's deadline is the earliest, and nothing has expired while the
/// front has not. Taking from the front is amortised O(1).
struct DeadlineQueue<Element> {
    private var elements: [Element] = []
    private var start = 0
    private let deadline: (Element) -> ContinuousClock.Instant

    /// An empty queue whose elements expire at `deadline(element)`.
    init(deadline: @escaping (Element) -> ContinuousClock.Instant) {
        self.deadline = deadline
    }

    /// Whether nothing waits.
    var isEmpty: Bool { start == elements.count }

    /// How many elements wait.
    var count: Int { elements.count - start }

    /// The front element's deadline: the earliest.
    var earliestDeadline: ContinuousClock.Instant? { isEmpty ? nil : deadline(elements[start]) }

    /// Adds `element` at the back.
    mutating func append(_ element: Element) {
        elements.append(element)
    }

    /// Adds `more` at the back, in order.
    mutating func append(contentsOf more: some Sequence<Element>) {
        elements.append(contentsOf: more)
    }

    /// Removes and returns the front element.
    mutating func popFirst() -> Element? {
        guard !isEmpty else { return nil }
        let element = elements[start]
        start += 1
        compact()
        return element
    }

    /// Removes and returns, in order, every element whose deadline is at or before `now`.
    mutating func expire(now: ContinuousClock.Instant) -> [Element] {
        guard let first = earliestDeadline, first <= now else { return [] }
        var expired: [Element] = []
        var kept: [Element] = []
        for element in elements[start...] {
            if deadline(element) <= now { expired.append(element) } else { kept.append(element) }
        }
        elements = kept
        start = 0
        return expired
    }

    /// Removes and returns every element, in order.
    mutating func removeAll() -> [Element] {
        let all = Array(elements[start...])
        elements.removeAll(keepingCapacity: true)
        start = 0
        return all
    }

    /// Releases the space of taken elements once it is worth it.
    private mutating func compact() {
        if start == elements.count {
            elements.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 1024 {
            elements.removeFirst(start)
            start = 0
        }
    }
}
