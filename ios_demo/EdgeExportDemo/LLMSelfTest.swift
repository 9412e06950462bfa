import Foundation

/// golden/prompt_NNN.json: a prompt, its ids, and the greedy continuation the artifact
/// produced on the host (keys checked against a real package by tests/test_llm_ios.py).
struct GoldenPrompt: Decodable {
    let prompt: String
    let promptIds: [Int]
    let continuationIds: [Int]

    enum CodingKeys: String, CodingKey {
        case prompt
        case promptIds = "prompt_ids"
        case continuationIds = "continuation_ids"
    }
}

/// The LLM package's self-test: for every golden prompt, the Swift tokenizer must give the
/// golden ids and greedy generation on the device must give the golden continuation
/// (greedy, no stop tokens, as the package's golden files were made).
@available(iOS 18.0, macOS 15.0, *)
struct LLMSelfTest {
    let package: LLMPackage

    func run() async throws -> [String] {
        let m = package.manifest
        let tokenizer = try LLMTokenizer(url: package.url(m.tokenizer.path))
        let compiled = try await CoreMLRunner.compiled(at: package.url(m.artifact.path), sha256: m.artifact.sha256)
        let generator = try LLMGenerator(compiledModel: compiled, generation: m.generation)
        var report: [String] = []
        for entry in m.golden {
            let golden = try JSONDecoder().decode(GoldenPrompt.self, from: Data(contentsOf: package.url(entry.path)))
            let ids = tokenizer.encode(golden.prompt)
            guard ids == golden.promptIds else {
                throw DemoError("tokenizer: \(golden.prompt.debugDescription) -> \(ids), golden \(golden.promptIds)")
            }
            let started = Date()
            let tokens = try generator.greedy(prompt: ids, steps: golden.continuationIds.count)
            let seconds = Date().timeIntervalSince(started)
            guard tokens == golden.continuationIds else {
                let step = zip(tokens, golden.continuationIds).enumerated().first { pair in pair.element.0 != pair.element.1 }?.offset ?? tokens.count
                throw DemoError("\(golden.prompt.debugDescription): continuation differs from golden at step \(step)")
            }
            report.append("\(golden.prompt)\(tokenizer.decode(tokens)) — \(tokens.count) tokens, "
                          + String(format: "%.1f tok/s", Double(tokens.count) / seconds))
        }
        return report
    }
}
