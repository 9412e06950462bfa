import Foundation

/// Runs one model: inputs and outputs in manifest order.
protocol Runner {
    func run(_ inputs: [HostTensor]) throws -> [HostTensor]
}

/// The runtimes this app ships, keyed by manifest `runtime.runtime`.
enum Runners {
    typealias Factory = (ModelPackage) async throws -> Runner

    static let factories: [String: Factory] = [
        "coreml": { try await CoreMLRunner(package: $0) },
    ]

    static func open(_ package: ModelPackage) async throws -> Runner {
        let runtime = package.manifest.runtime.runtime
        guard let factory = factories[runtime] else {
            throw DemoError("no '\(runtime)' runtime in this app (has \(factories.keys.sorted().joined(separator: ", ")))")
        }
        return try await factory(package)
    }
}
