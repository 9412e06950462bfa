import Foundation

/// manifest.json of an LLM package (`"kind": "llm"`) as the app reads it; keys are spelled
/// out so they can be checked against edge_export/schemas/llm-manifest.schema.json
/// (tests/test_app_sources.py).
struct LLMManifest: Decodable {
    let name: String
    let version: String
    let kind: String
    let artifact: Artifact
    let tokenizer: TokenizerFile
    let generation: Generation
    let golden: [GoldenEntry]

    enum CodingKeys: String, CodingKey {
        case name, version, kind, artifact, tokenizer, generation, golden
    }

    struct Artifact: Decodable {
        let path: String
        let sha256: String

        enum CodingKeys: String, CodingKey {
            case path, sha256
        }
    }

    struct TokenizerFile: Decodable {
        let path: String

        enum CodingKeys: String, CodingKey {
            case path
        }
    }

    struct Generation: Decodable {
        let bosTokenId: Int?
        let eosTokenIds: [Int]
        let maxContext: Int
        let maxSeqLen: Int

        enum CodingKeys: String, CodingKey {
            case bosTokenId = "bos_token_id"
            case eosTokenIds = "eos_token_ids"
            case maxContext = "max_context"
            case maxSeqLen = "max_seq_len"
        }
    }

    struct GoldenEntry: Decodable {
        let path: String

        enum CodingKeys: String, CodingKey {
            case path
        }
    }
}

/// An LLM package folder: manifest, tokenizer, golden prompts, the stateful `.mlpackage`.
struct LLMPackage {
    let root: URL
    let manifest: LLMManifest

    init(root: URL) throws {
        self.root = root
        manifest = try JSONDecoder().decode(LLMManifest.self, from: Data(contentsOf: root.appendingPathComponent("manifest.json")))
        guard manifest.kind == "llm" else { throw DemoError("\(root.lastPathComponent) is not an LLM package") }
    }

    func url(_ path: String) -> URL { root.appendingPathComponent(path) }
}
