import DequeModule

/// A set that remembers only its most recent `capacity` members: the worker's record of finished
/// batches, the decoder's record of answered queries. Inserting past the capacity forgets the
/// oldest member. O(1) per operation.
public struct RecentSet<Element: Hashable & Sendable>: Sendable {
    /// How many members it keeps.
    public let capacity: Int
    private var members = Set<Element>()
    private var order = Deque<Element>()

    /// Creates an empty set.
    ///
    /// - Precondition: `capacity >= 1`.
    public init(capacity: Int) {
        precondition(capacity >= 1)
        self.capacity = capacity
    }

    /// Whether `element` is among the recent members.
    public func contains(_ element: Element) -> Bool { members.contains(element) }

    /// Adds `element` (a member already present keeps its place); forgets the oldest past capacity.
    public mutating func insert(_ element: Element) {
        guard members.insert(element).inserted else { return }
        order.append(element)
        if order.count > capacity { members.remove(order.removeFirst()) }
    }

    /// The number of members.
    public var count: Int { members.count }
}
