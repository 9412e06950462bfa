import SwiftUI

/// Text generation with the LLM packages copied into Models/LLM/<package>/ (see ios_demo/README.md):
/// a prompt, tokens streamed as they come, and the golden-prompt self-test.
@available(iOS 18.0, macOS 15.0, *)
struct LLMView: View {
    @State private var packages: [LLMPackage] = LLMView.bundled()
    @State private var selected = 0
    @State private var prompt = "The for statement is used to"
    @State private var output = ""
    @State private var status = ""
    @State private var busy = false

    var body: some View {
        Form {
            Section("LLM package") {
                if packages.isEmpty { Text("No LLM packages in Models/LLM.") }
                Picker("Package", selection: $selected) {
                    ForEach(packages.indices, id: \.self) { i in
                        Text("\(packages[i].manifest.name) · \(packages[i].root.lastPathComponent)").tag(i)
                    }
                }
            }
            Section("Generate") {
                TextField("Prompt", text: $prompt)
                Button("Generate 64 tokens") { generate() }.disabled(busy || packages.isEmpty)
                Text(output)
            }
            Section("Self-test") {
                Button("Run golden prompts") { selfTest() }.disabled(busy || packages.isEmpty)
            }
            Text(status).font(.footnote)
        }
        .navigationTitle("Text generation")
    }

    static func bundled() -> [LLMPackage] {
        guard let root = ModelIndex.root?.appendingPathComponent("LLM"),
              let names = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return [] }
        return names.sorted().compactMap { try? LLMPackage(root: root.appendingPathComponent($0)) }
    }

    private func generate() {
        let package = packages[selected]
        let text = prompt
        busy = true
        output = text
        Task.detached {
            do {
                let m = package.manifest
                let tokenizer = try LLMTokenizer(url: package.url(m.tokenizer.path))
                let compiled = try await CoreMLRunner.compiled(at: package.url(m.artifact.path), sha256: m.artifact.sha256)
                let generator = try LLMGenerator(compiledModel: compiled, generation: m.generation)
                var tokens: [Int] = []
                let started = Date()
                _ = try generator.greedy(prompt: tokenizer.encode(text), steps: 64, stop: Set(m.generation.eosTokenIds)) { token in
                    tokens.append(token)
                    let shown = text + tokenizer.decode(tokens)
                    Task { @MainActor in output = shown }
                }
                let rate = Double(tokens.count) / Date().timeIntervalSince(started)
                await MainActor.run { status = String(format: "%d tokens, %.1f tok/s", tokens.count, rate); busy = false }
            } catch {
                await MainActor.run { status = error.localizedDescription; busy = false }
            }
        }
    }

    private func selfTest() {
        let package = packages[selected]
        busy = true
        Task.detached {
            let result: String
            do {
                result = "PASS\n" + (try await LLMSelfTest(package: package).run()).joined(separator: "\n")
            } catch {
                result = "FAIL: \(error.localizedDescription)"
            }
            await MainActor.run { status = result; busy = false }
        }
    }
}
