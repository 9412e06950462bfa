import SwiftUI

struct ContentView: View {
    @State private var model = DemoModel()
    @State private var drawing = Drawing()
    private let padSide: CGFloat = 240

    var body: some View {
        NavigationStack {
            Form {
                Section("Model") {
                    if model.models.isEmpty { Text("No bundled models.") }
                    ForEach(model.models) { entry in
                        Button { model.select(entry) } label: {
                            HStack {
                                Text("\(entry.title) (\(entry.runtime))")
                                Spacer()
                                if entry == model.selected { Image(systemName: "checkmark") }
                            }
                        }
                        .disabled(model.busy)
                    }
                }
                if model.imageSpec != nil {
                    Section("Draw a digit") {
                        DrawPad(drawing: $drawing, side: padSide)
                        HStack {
                            Button("Classify") { classifyDrawing() }.disabled(model.busy || drawing.isEmpty)
                            Button("Clear") { drawing = Drawing() }
                            Button("Sample") { if let p = model.sampleImage() { model.classify(p) } }
                                .disabled(model.busy || model.package?.manifest.appVectors == nil)
                        }
                        .buttonStyle(.bordered)
                    }
                } else if model.package != nil {
                    Text("This model's input is not an image: only the self-test applies.")
                }
                if let prediction = model.prediction {
                    Section("Top-\(prediction.topK.count)") {
                        ForEach(Array(prediction.topK.enumerated()), id: \.offset) { _, item in
                            LabeledContent(item.label, value: String(format: "%.4f", item.score))
                        }
                        Text(String(format: "latency %.2f ms", prediction.latencyMs)).font(.footnote)
                    }
                }
                Section("Self-test") {
                    Button("Run self-test") { model.selfTest() }.disabled(model.busy || model.package == nil)
                    if let report = model.report { ReportView(report: report) }
                }
                if #available(iOS 18.0, *) {
                    Section("Language models") {
                        NavigationLink("Text generation (stateful Core ML)") { LLMView() }
                    }
                }
                Text(model.status).font(.footnote)
            }
            .navigationTitle("Edge Export")
            .task { if model.selected == nil, let first = model.models.first { model.select(first) } }
        }
    }

    private func classifyDrawing() {
        do {
            model.classify(try drawing.render(padSide: padSide))
        } catch {
            print(error)
        }
    }
}

struct ReportView: View {
    let report: SelfTestReport

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text(report.passed ? "PASS" : "FAIL").font(.title2).foregroundStyle(report.passed ? .green : .red)
            if let error = report.error { Text(error) }
            ForEach(report.outputs, id: \.name) { output in
                Text("\(output.name): \(output.passed ? "pass" : "fail") — \(output.checks.map(\.description).joined(separator: ", "))")
            }
            if let worst = report.worst { Text("worst: \(worst.description)") }
            ForEach(report.notes, id: \.self) { Text($0) }
        }
    }
}
