import Foundation

/// Parity metrics as edge_export/parity.py computes them, over all samples of one output.
enum Metrics {
    static let snrCapDb = 200.0

    /// dot(a, b) / (|a| |b|); 1 when both are all zeros.
    static func cosine(_ reference: [Float], _ actual: [Float]) -> Double {
        var dot = 0.0, na = 0.0, nr = 0.0
        for i in reference.indices {
            let (r, a) = (Double(reference[i]), Double(actual[i]))
            dot += a * r
            na += a * a
            nr += r * r
        }
        let denom = na.squareRoot() * nr.squareRoot()
        if denom > 0 { return dot / denom }
        return maxAbs(reference, actual) == 0 ? 1 : 0
    }

    /// 10 log10(sum ref^2 / sum (ref - out)^2), capped at +-200 dB like the pipeline.
    static func snrDb(_ reference: [Float], _ actual: [Float]) -> Double {
        var signal = 0.0, noise = 0.0
        for i in reference.indices {
            let r = Double(reference[i])
            let e = Double(actual[i]) - r
            signal += r * r
            noise += e * e
        }
        if noise == 0 { return snrCapDb }
        if !noise.isFinite || signal == 0 { return -snrCapDb }
        return min(snrCapDb, 10 * log10(signal / noise))
    }

    static func maxAbs(_ reference: [Float], _ actual: [Float]) -> Double {
        reference.indices.map { abs(Double(actual[$0]) - Double(reference[$0])) }.max() ?? 0
    }

    static func argmax(_ values: [Float]) -> Int {
        values.indices.max { values[$0] < values[$1] || (values[$0] == values[$1] && $0 > $1) } ?? -1
    }

    /// Fraction of samples whose argmax agrees.
    static func top1Agreement(_ reference: [[Float]], _ actual: [[Float]]) -> Double {
        let same = zip(reference, actual).filter { argmax($0) == argmax($1) }.count
        return Double(same) / Double(reference.count)
    }
}
