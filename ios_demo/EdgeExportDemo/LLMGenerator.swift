import CoreML
import Foundation

/// Greedy generation over an LLM package's stateful Core ML model (iOS 18): the `prefill`
/// function takes chunks of `max_seq_len` tokens (the last one padded: padding writes cache
/// slots that stay masked until a later token overwrites them), `decode` takes one token,
/// and one `MLState` (the fp16 K/V caches) carries the context across both, exactly as
/// `edge_export.llm.coreml.CoreMLSession` drives them on the host.
@available(iOS 18.0, macOS 15.0, *)
final class LLMGenerator {
    private let prefill: MLModel
    private let decode: MLModel
    private var state: MLState
    let chunk: Int
    let context: Int

    init(compiledModel: URL, generation: LLMManifest.Generation) throws {
        func load(_ function: String) throws -> MLModel {
            let configuration = MLModelConfiguration()
            configuration.computeUnits = .all
            configuration.functionName = function
            return try MLModel(contentsOf: compiledModel, configuration: configuration)
        }
        prefill = try load("prefill")
        decode = try load("decode")
        state = decode.makeState()
        chunk = generation.maxSeqLen
        context = generation.maxContext
    }

    /// Forget the context (a fresh, zero-filled cache).
    func reset() { state = decode.makeState() }

    /// Feed `ids` at cache positions start..., returning the logits after the last one.
    func forward(_ ids: [Int], start: Int) throws -> [Float] {
        var logits: [Float] = []
        var done = 0
        while done < ids.count {
            let position = start + done
            let rest = ids.count - done
            if rest > 1 && position + chunk <= context {
                let n = min(rest, chunk)
                let padded = Array(ids[done..<(done + n)]) + Array(repeating: 0, count: chunk - n)
                logits = try run(prefill, padded, position, row: n - 1)
                done += n
            } else {
                logits = try run(decode, [ids[done]], position, row: 0)
                done += 1
            }
        }
        return logits
    }

    /// Greedy continuation of `prompt` (at most `steps` tokens, stopping after a stop id),
    /// calling `onToken` as each token comes.
    func greedy(prompt: [Int], steps: Int, stop: Set<Int> = [], onToken: (Int) -> Void = { _ in }) throws -> [Int] {
        reset()
        let steps = min(steps, context - prompt.count)
        guard steps > 0 else { return [] }
        var tokens = [argmax(try forward(prompt, start: 0))]
        onToken(tokens[0])
        while tokens.count < steps, !stop.contains(tokens.last!) {
            let logits = try forward([tokens.last!], start: prompt.count + tokens.count - 1)
            tokens.append(argmax(logits))
            onToken(tokens.last!)
        }
        return tokens
    }

    private func run(_ model: MLModel, _ ids: [Int], _ start: Int, row: Int) throws -> [Float] {
        let tokens = try MLMultiArray(shape: [1, NSNumber(value: ids.count)], dataType: .int32)
        for (i, id) in ids.enumerated() { tokens[[0, NSNumber(value: i)]] = NSNumber(value: id) }
        let position = try MLMultiArray(shape: [1], dataType: .int32)
        position[0] = NSNumber(value: start)
        let input = try MLDictionaryFeatureProvider(dictionary: ["input_ids": tokens, "start": position])
        let output = try model.prediction(from: input, using: state)
        guard let logits = output.featureValue(for: "logits")?.multiArrayValue else {
            throw DemoError("the model has no 'logits' output")
        }
        let vocab = logits.shape[2].intValue
        return (0..<vocab).map { logits[[0, NSNumber(value: row), NSNumber(value: $0)]].floatValue }
    }

    private func argmax(_ values: [Float]) -> Int {
        values.indices.max { values[$0] < values[$1] } ?? 0
    }
}
