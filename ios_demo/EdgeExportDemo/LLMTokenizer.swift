import Foundation

/// The package's `tokenizer.json` (Hugging Face tokenizers format) for byte-level BPE models,
/// as the tiny LM and GPT-2/Llama-3/Qwen-style tokenizers use: GPT-2 pre-tokenization regex,
/// bytes mapped to printable characters, merges applied by rank, the post-processor's
/// leading special token (BOS) prepended. The self-test checks it against the golden ids.
final class LLMTokenizer {
    private struct Pair: Hashable {
        let a: String
        let b: String
    }

    private let vocab: [String: Int]
    private let tokens: [Int: String]
    private let ranks: [Pair: Int]
    private let prefix: [Int]
    private let byteToChar: [UInt8: Character]
    private let charToByte: [Character: UInt8]
    private static let split = try! NSRegularExpression(
        pattern: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")

    init(url: URL) throws {
        guard let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any],
              let model = json["model"] as? [String: Any], model["type"] as? String == "BPE",
              var vocab = model["vocab"] as? [String: Int] else {
            throw DemoError("tokenizer.json: not a BPE tokenizer")
        }
        for added in json["added_tokens"] as? [[String: Any]] ?? [] {
            if let content = added["content"] as? String, let id = added["id"] as? Int { vocab[content] = id }
        }
        var ranks: [Pair: Int] = [:]
        for (rank, merge) in (model["merges"] as? [Any] ?? []).enumerated() {
            let parts = (merge as? [String]) ?? ((merge as? String)?.split(separator: " ").map(String.init) ?? [])
            if parts.count == 2 { ranks[Pair(a: parts[0], b: parts[1])] = rank }
        }
        // TemplateProcessing "single": the special tokens before the sequence (e.g. <s>)
        let single = (json["post_processor"] as? [String: Any])?["single"] as? [[String: Any]] ?? []
        prefix = single.prefix { $0["SpecialToken"] != nil }
            .compactMap { (($0["SpecialToken"] as? [String: Any])?["id"] as? String).flatMap { vocab[$0] } }
        self.vocab = vocab
        self.ranks = ranks
        tokens = Dictionary(vocab.map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        (byteToChar, charToByte) = LLMTokenizer.byteMap()
    }

    func encode(_ text: String) -> [Int] {
        let ns = text as NSString
        var ids = prefix
        for match in LLMTokenizer.split.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            let piece = ns.substring(with: match.range)
            let word = Array(piece.utf8).map { String(byteToChar[$0]!) }
            ids += bpe(word).compactMap { vocab[$0] }
        }
        return ids
    }

    func decode(_ ids: [Int]) -> String {
        let bytes = ids.compactMap { tokens[$0] }.flatMap { token in token.compactMap { charToByte[$0] } }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func bpe(_ start: [String]) -> [String] {
        var word = start
        while word.count > 1 {
            var best: (rank: Int, index: Int)?
            for i in 0..<(word.count - 1) {
                if let rank = ranks[Pair(a: word[i], b: word[i + 1])], rank < (best?.rank ?? Int.max) {
                    best = (rank, i)
                }
            }
            guard let index = best?.index else { break }
            let (a, b) = (word[index], word[index + 1])
            var merged: [String] = []
            var i = 0
            while i < word.count {
                if i < word.count - 1, word[i] == a, word[i + 1] == b {
                    merged.append(a + b)
                    i += 2
                } else {
                    merged.append(word[i])
                    i += 1
                }
            }
            word = merged
        }
        return word
    }

    /// GPT-2's reversible byte -> printable character table.
    private static func byteMap() -> ([UInt8: Character], [Character: UInt8]) {
        var bytes = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = bytes
        var extra = 0
        for b in 0..<256 where !bytes.contains(b) {
            bytes.append(b)
            chars.append(256 + extra)
            extra += 1
        }
        var forward: [UInt8: Character] = [:]
        var backward: [Character: UInt8] = [:]
        for (b, c) in zip(bytes, chars) {
            let character = Character(UnicodeScalar(UInt32(c))!)
            forward[UInt8(b)] = character
            backward[character] = UInt8(b)
        }
        return (forward, backward)
    }
}
