import CoreML
import Foundation

/// Core ML `.mlpackage`, compiled on first launch and cached by artifact hash.
final class CoreMLRunner: Runner {
    private let model: MLModel
    private let package: ModelPackage

    init(package: ModelPackage) async throws {
        self.package = package
        let configuration = MLModelConfiguration()
        configuration.computeUnits = .all
        model = try MLModel(contentsOf: try await Self.compiled(package), configuration: configuration)
    }

    static func compiled(_ package: ModelPackage) async throws -> URL {
        try await compiled(at: package.url(package.manifest.artifact.path), sha256: package.manifest.artifact.sha256)
    }

    /// Application Support/CompiledModels/<sha256>.mlmodelc, compiling it if absent
    /// (shared with the LLM packages' stateful models).
    static func compiled(at artifact: URL, sha256: String) async throws -> URL {
        let cache = try FileManager.default
            .url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("CompiledModels", isDirectory: true)
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let destination = cache.appendingPathComponent("\(sha256).mlmodelc")
        if FileManager.default.fileExists(atPath: destination.path) { return destination }
        let temporary = try await MLModel.compileModel(at: artifact)
        try? FileManager.default.removeItem(at: destination)
        try FileManager.default.moveItem(at: temporary, to: destination)
        return destination
    }

    func run(_ inputs: [HostTensor]) throws -> [HostTensor] {
        var features: [String: MLFeatureValue] = [:]
        for tensor in inputs {
            features[tensor.name] = MLFeatureValue(multiArray: try Self.multiArray(tensor))
        }
        let result = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        return try package.manifest.outputs.map { spec in
            guard let array = result.featureValue(for: spec.name)?.multiArrayValue else {
                throw DemoError("Core ML model has no output '\(spec.name)'")
            }
            let shape = array.shape.map(\.intValue)
            return try HostTensor.float32(name: spec.name, shape: shape, values: Self.floats(array))
        }
    }

    /// Core ML takes float32/float16/int32 arrays; int64 inputs were converted to int32 by coremltools.
    private static func multiArray(_ tensor: HostTensor) throws -> MLMultiArray {
        let type: MLMultiArrayDataType
        switch tensor.dtype {
        case .float32: type = .float32
        case .float16: type = .float16
        case .int32, .int64: type = .int32
        default: throw DemoError("\(tensor.name): Core ML has no \(tensor.dtype.rawValue) inputs")
        }
        let array = try MLMultiArray(shape: tensor.shape.map { NSNumber(value: $0) }, dataType: type)
        for (i, value) in tensor.floats().enumerated() {
            array[index(i, tensor.shape)] = NSNumber(value: value)
        }
        return array
    }

    /// Elements in C order; the subscript honours strides and the array's data type.
    private static func floats(_ array: MLMultiArray) -> [Float] {
        let shape = array.shape.map(\.intValue)
        return (0..<shape.reduce(1, *)).map { array[index($0, shape)].floatValue }
    }

    private static func index(_ flat: Int, _ shape: [Int]) -> [NSNumber] {
        var rest = flat
        var out = [NSNumber](repeating: 0, count: shape.count)
        for d in shape.indices.reversed() {
            out[d] = NSNumber(value: rest % shape[d])
            rest /= shape[d]
        }
        return out
    }
}
