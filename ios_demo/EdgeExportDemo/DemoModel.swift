import Foundation
import Observation

struct Prediction {
    let topK: [(label: String, score: Float)]
    let latencyMs: Double
}

/// The loaded model and everything the screen shows.
@MainActor
@Observable
final class DemoModel {
    static let topK = 3

    let models: [IndexEntry]
    private(set) var selected: IndexEntry?
    private(set) var package: ModelPackage?
    private(set) var imageSpec: ImageSpec?
    private(set) var prediction: Prediction?
    private(set) var report: SelfTestReport?
    private(set) var status = ""
    private(set) var busy = false

    private var runner: Runner?
    private var labels: [String] = []

    init() {
        models = (try? ModelIndex.load()) ?? []
        status = models.isEmpty ? "No bundled models: run `make demo-apps`." : ""
    }

    func select(_ entry: IndexEntry) {
        work("Loading \(entry.title)…") {
            let package = try ModelPackage.open(entry)
            let runner = try await Runners.open(package)
            self.selected = entry
            self.package = package
            self.runner = runner
            self.labels = try package.labels()
            let input = package.manifest.inputs.count == 1 ? package.manifest.inputs.first : nil
            self.imageSpec = input.flatMap { Preprocess.resolve(package.manifest.preprocessing, shape: $0.shape) }
            self.prediction = nil
            self.report = nil
            return "\(package.title) on \(package.manifest.runtime.runtime)"
        }
    }

    func classify(_ pixels: Pixels) {
        work("Running…") {
            guard let package = self.package, let runner = self.runner, let spec = self.imageSpec,
                  let input = package.manifest.inputs.first else { throw DemoError("no model loaded") }
            let tensor = try HostTensor.float32(name: input.name, shape: input.shape, values: Preprocess.tensor(pixels, spec))
            let start = DispatchTime.now().uptimeNanoseconds
            let scores = try runner.run([tensor])[0].floats()
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            let top = Preprocess.topK(scores, Self.topK).map { i, s in
                (label: i < self.labels.count ? self.labels[i] : "#\(i)", score: s)
            }
            self.prediction = Prediction(topK: top, latencyMs: ms)
            return "Top-1 \(top.first?.label ?? "?")"
        }
    }

    func sampleImage() -> Pixels? {
        guard let package, let image = package.manifest.appVectors?.image else { return nil }
        return try? SelfTest.decode(package.data(image))
    }

    func selfTest() {
        work("Self-test…") {
            guard let package = self.package, let runner = self.runner else { throw DemoError("no model loaded") }
            let report = SelfTest(package: package).run(runner)
            self.report = report
            return report.passed ? "Self-test passed" : "Self-test FAILED"
        }
    }

    private func work(_ message: String, _ block: @escaping () async throws -> String) {
        guard !busy else { return }
        busy = true
        status = message
        Task {
            do {
                status = try await block()
            } catch {
                status = "Error: \(error.localizedDescription)"
            }
            busy = false
        }
    }
}
