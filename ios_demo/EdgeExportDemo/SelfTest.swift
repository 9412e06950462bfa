import Foundation
import ImageIO

/// One threshold check on one output; margin < 0 means it failed.
struct Check: CustomStringConvertible {
    let output: String
    let metric: String
    let value: Double
    let limit: Double

    private var atMost: Bool { metric == "max_abs" }
    var margin: Double { (atMost ? limit - value : value - limit) / max(abs(limit), 1e-12) }
    var passed: Bool { margin >= 0 }
    var description: String {
        "\(output) \(metric) \(String(format: "%.6g", value)) (\(atMost ? "≤" : "≥") \(limit))"
    }
}

struct OutputResult {
    let name: String
    let checks: [Check]

    var passed: Bool { checks.allSatisfy(\.passed) }
}

struct SelfTestReport {
    let model: String
    let outputs: [OutputResult]
    let notes: [String]
    let error: String?

    var passed: Bool { error == nil && !outputs.isEmpty && outputs.allSatisfy(\.passed) }
    /// The check closest to (or furthest past) its threshold.
    var worst: Check? { outputs.flatMap(\.checks).min { $0.margin < $1.margin } }
}

/// Tolerance between the app's preprocessed tensor and the package's expected one.
let appTensorTolerance = 1e-4

/// Runs every golden input and compares with the golden outputs at the manifest's
/// parity thresholds, then checks the app's own preprocessing against `app_vectors`.
struct SelfTest {
    let package: ModelPackage

    func run(_ runner: Runner) -> SelfTestReport {
        let m = package.manifest
        do {
            var reference: [[[Float]]] = []
            var actual: [[[Float]]] = []
            for sample in m.golden.samples {
                let inputs = try m.inputs.map { try load($0, sample.inputs) }
                actual.append(try runner.run(inputs).map { $0.floats() })
                reference.append(try m.outputs.map { try load($0, sample.outputs).floats() })
            }
            let outputs = try m.outputs.enumerated().map { i, spec in
                try compare(spec, reference.map { $0[i] }, actual.map { $0[i] })
            }
            return SelfTestReport(model: package.title, outputs: outputs, notes: try appVectorNotes(runner), error: nil)
        } catch {
            return SelfTestReport(model: package.title, outputs: [], notes: [], error: error.localizedDescription)
        }
    }

    private func load(_ spec: TensorSpec, _ paths: [String: String]) throws -> HostTensor {
        guard let path = paths[spec.name] else { throw DemoError("golden sample has no '\(spec.name)'") }
        return try HostTensor(name: spec.name, dtype: spec.dtype, shape: spec.shape, data: package.data(path))
    }

    private func compare(_ spec: TensorSpec, _ reference: [[Float]], _ actual: [[Float]]) throws -> OutputResult {
        for (r, a) in zip(reference, actual) where r.count != a.count {
            throw DemoError("\(spec.name): \(a.count) values, golden has \(r.count)")
        }
        let ref = reference.flatMap { $0 }
        let act = actual.flatMap { $0 }
        let t = package.manifest.parity.thresholds
        let classifier = spec.shape.count == 2 && spec.shape[1] >= 2
        var checks: [Check] = []
        if let limit = t.cosine { checks.append(Check(output: spec.name, metric: "cosine", value: Metrics.cosine(ref, act), limit: limit)) }
        if let limit = t.snrDb { checks.append(Check(output: spec.name, metric: "snr_db", value: Metrics.snrDb(ref, act), limit: limit)) }
        if let limit = t.maxAbs { checks.append(Check(output: spec.name, metric: "max_abs", value: Metrics.maxAbs(ref, act), limit: limit)) }
        if let limit = t.top1Agreement, classifier {
            checks.append(Check(output: spec.name, metric: "top1_agreement", value: Metrics.top1Agreement(reference, actual), limit: limit))
        }
        return OutputResult(name: spec.name, checks: checks)
    }

    /// The shipped image must preprocess to the shipped tensor and rank the same top-1.
    private func appVectorNotes(_ runner: Runner) throws -> [String] {
        let m = package.manifest
        guard let vectors = m.appVectors, let input = m.inputs.first,
              let spec = Preprocess.resolve(m.preprocessing, shape: input.shape) else { return [] }
        let ours = Preprocess.tensor(try SelfTest.decode(package.data(vectors.image)), spec)
        let expected = try HostTensor(name: input.name, dtype: .float32, shape: input.shape, data: package.data(vectors.tensor))
        let diff = Metrics.maxAbs(expected.floats(), ours)
        let feed = try HostTensor.float32(name: input.name, shape: input.shape, values: ours)
        let scores = try runner.run([feed])[0].floats()
        let top1 = Preprocess.topK(scores, 1)[0].0
        let wanted = vectors.topK.first.map { Int($0[0]) }
        guard diff <= appTensorTolerance else { throw DemoError("app preprocessing differs from app_vectors tensor by \(diff)") }
        guard wanted == nil || wanted == top1 else { throw DemoError("app image gives top-1 \(top1), app_vectors expects \(wanted!)") }
        return ["app preprocessing max |Δ| \(String(format: "%.3g", diff)), top-1 \(top1) as expected"]
    }

    static func decode(_ data: Data) throws -> Pixels {
        guard let source = CGImageSourceCreateWithData(data as CFData, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else { throw DemoError("cannot decode image") }
        return try Preprocess.pixels(image)
    }
}
