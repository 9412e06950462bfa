import Foundation

/// manifest.json as the app reads it; keys are spelled out so they can be checked
/// against edge_export/schemas/manifest.schema.json (tests/test_app_sources.py).
struct Manifest: Decodable {
    let name: String
    let version: String
    let target: String
    let recipe: Recipe
    let runtime: RuntimeInfo
    let artifact: Artifact
    let inputs: [TensorSpec]
    let outputs: [TensorSpec]
    let preprocessing: Preprocessing?
    let labels: Labels?
    let parity: Parity
    let golden: Golden
    let appVectors: AppVectors?

    enum CodingKeys: String, CodingKey {
        case name, version, target, recipe, runtime, artifact, inputs, outputs
        case preprocessing, labels, parity, golden
        case appVectors = "app_vectors"
    }

    struct Recipe: Decodable {
        let name: String

        enum CodingKeys: String, CodingKey {
            case name
        }
    }

    struct RuntimeInfo: Decodable {
        let runtime: String

        enum CodingKeys: String, CodingKey {
            case runtime
        }
    }

    struct Artifact: Decodable {
        let path: String
        let sha256: String

        enum CodingKeys: String, CodingKey {
            case path, sha256
        }
    }

    struct Labels: Decodable {
        let file: String

        enum CodingKeys: String, CodingKey {
            case file
        }
    }

    struct Parity: Decodable {
        let thresholds: Thresholds

        enum CodingKeys: String, CodingKey {
            case thresholds
        }
    }

    struct Golden: Decodable {
        let samples: [Sample]

        enum CodingKeys: String, CodingKey {
            case samples
        }
    }

    /// Tensor name -> file path relative to the package.
    struct Sample: Decodable {
        let inputs: [String: String]
        let outputs: [String: String]

        enum CodingKeys: String, CodingKey {
            case inputs, outputs
        }
    }

    struct AppVectors: Decodable {
        let image: String
        let tensor: String
        let topK: [[Double]]

        enum CodingKeys: String, CodingKey {
            case image, tensor
            case topK = "top_k"
        }
    }
}

struct TensorSpec: Decodable {
    let name: String
    let dtype: DType
    let shape: [Int]

    enum CodingKeys: String, CodingKey {
        case name, dtype, shape
    }
}

struct Thresholds: Decodable {
    let cosine: Double?
    let snrDb: Double?
    let top1Agreement: Double?
    let maxAbs: Double?

    enum CodingKeys: String, CodingKey {
        case cosine
        case snrDb = "snr_db"
        case top1Agreement = "top1_agreement"
        case maxAbs = "max_abs"
    }
}

struct Preprocessing: Decodable {
    let layout: String?
    let colour: String?
    let imageSize: [Int]?
    let scale: Double?
    let mean: [Double]?
    let std: [Double]?
    let invert: Bool?

    enum CodingKeys: String, CodingKey {
        case layout, colour, scale, mean, std, invert
        case imageSize = "image_size"
    }
}

/// A bundled package: its folder in the app bundle plus its manifest.
struct ModelPackage {
    let entry: IndexEntry
    let root: URL
    let manifest: Manifest

    var title: String { entry.title }

    static func open(_ entry: IndexEntry) throws -> ModelPackage {
        guard let models = ModelIndex.root else { throw DemoError("no Models folder in the app bundle") }
        let root = models.appendingPathComponent(entry.path, isDirectory: true)
        let data = try Data(contentsOf: root.appendingPathComponent("manifest.json"))
        return ModelPackage(entry: entry, root: root, manifest: try JSONDecoder().decode(Manifest.self, from: data))
    }

    func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    func data(_ relative: String) throws -> Data { try Data(contentsOf: url(relative)) }

    func labels() throws -> [String] {
        guard let file = manifest.labels?.file else { return [] }
        return String(decoding: try data(file), as: UTF8.self)
            .split(separator: "\n", omittingEmptySubsequences: true)
            .map(String.init)
    }
}

struct DemoError: LocalizedError {
    let errorDescription: String?

    init(_ message: String) { errorDescription = message }
}
