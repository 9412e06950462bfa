import CoreGraphics
import Foundation

/// Pixels as RGBA8, row-major, not premultiplied.
struct Pixels {
    let width: Int
    let height: Int
    let rgba: [UInt8]
}

/// The manifest's preprocessing with its defaults filled in (docs/app-spec.md).
struct ImageSpec {
    let layout: String
    let colour: String
    let height: Int
    let width: Int
    let scale: Double
    let mean: [Double]
    let std: [Double]
    let invert: Bool

    var channels: Int { colour == "grayscale" ? 1 : 3 }
}

/// The app preprocessing spec, mirrored from edge_export/preprocess.py step by step:
/// integer numerators, an integer area sum, one division in Double, then
/// invert -> (x * scale - mean) / std, cast to Float at the end.
enum Preprocess {
    static let channelsOf = ["grayscale": 1, "rgb": 3, "bgr": 3]

    /// Nil when the input is not an image (layout "none" or an unusable shape).
    static func resolve(_ p: Preprocessing?, shape: [Int]) -> ImageSpec? {
        let layout = p?.layout ?? "NCHW"
        guard layout == "NCHW" || layout == "NHWC" else { return nil }
        let dims = shape.count == 4 && shape[0] == 1 ? Array(shape.dropFirst()) : shape
        guard dims.count == 3 else { return nil }
        let (c, h, w) = layout == "NCHW" ? (dims[0], dims[1], dims[2]) : (dims[2], dims[0], dims[1])
        let colour = p?.colour ?? (c == 1 ? "grayscale" : "rgb")
        guard channelsOf[colour] == c else { return nil }
        if let size = p?.imageSize, size != [h, w] { return nil }
        return ImageSpec(
            layout: layout, colour: colour, height: h, width: w,
            scale: p?.scale ?? 1.0,
            mean: perChannel(p?.mean, c, 0.0),
            std: perChannel(p?.std, c, 1.0),
            invert: p?.invert ?? false
        )
    }

    private static func perChannel(_ values: [Double]?, _ channels: Int, _ fallback: Double) -> [Double] {
        guard let values, !values.isEmpty else { return Array(repeating: fallback, count: channels) }
        return values.count == 1 ? Array(repeating: values[0], count: channels) : values
    }

    /// The float model input, flattened in the layout's order.
    static func tensor(_ pixels: Pixels, _ spec: ImageSpec) -> [Float] {
        let (planes, denom) = numerators(pixels, spec.colour)
        var out = [Float](repeating: 0, count: spec.channels * spec.height * spec.width)
        for (c, plane) in planes.enumerated() {
            let x = areaResize(plane, pixels.width, pixels.height, denom, spec.width, spec.height)
            for i in 0..<spec.height {
                for j in 0..<spec.width {
                    var v = x[i * spec.width + j]
                    if spec.invert { v = 255.0 - v }
                    v = (v * spec.scale - spec.mean[c]) / spec.std[c]
                    let index = spec.layout == "NCHW"
                        ? (c * spec.height + i) * spec.width + j
                        : (i * spec.width + j) * spec.channels + c
                    out[index] = Float(v)
                }
            }
        }
        return out
    }

    /// Integer planes N and one denominator D; a channel value is N / D.
    private static func numerators(_ pixels: Pixels, _ colour: String) -> ([[Int64]], Int64) {
        let n = pixels.width * pixels.height
        let opaque = stride(from: 3, to: pixels.rgba.count, by: 4).allSatisfy { pixels.rgba[$0] == 255 }
        var r = [Int64](repeating: 0, count: n)
        var g = r
        var b = r
        for k in 0..<n {
            let a = Int64(pixels.rgba[4 * k + 3])
            let comp = (0..<3).map { ch -> Int64 in
                let v = Int64(pixels.rgba[4 * k + ch])
                return opaque ? v : v * a + 255 * (255 - a)
            }
            r[k] = comp[0]
            g[k] = comp[1]
            b[k] = comp[2]
        }
        let denom: Int64 = opaque ? 1 : 255
        switch colour {
        case "grayscale": return ([(0..<n).map { 299 * r[$0] + 587 * g[$0] + 114 * b[$0] }], denom * 1000)
        case "bgr": return ([b, g, r], denom)
        default: return ([r, g, b], denom)
        }
    }

    /// Source range [start, end) averaged into output index i (area; nearest when upscaling).
    static func span(_ i: Int, _ src: Int, _ dst: Int) -> (Int, Int) {
        let start = i * src / dst
        return (start, max((i + 1) * src / dst, start + 1))
    }

    private static func areaResize(
        _ plane: [Int64], _ srcW: Int, _ srcH: Int, _ denom: Int64, _ outW: Int, _ outH: Int
    ) -> [Double] {
        var out = [Double](repeating: 0, count: outW * outH)
        for i in 0..<outH {
            let (r0, r1) = span(i, srcH, outH)
            for j in 0..<outW {
                let (c0, c1) = span(j, srcW, outW)
                var total: Int64 = 0
                for r in r0..<r1 {
                    for c in c0..<c1 { total += plane[r * srcW + c] }
                }
                out[i * outW + j] = Double(total) / Double(Int64((r1 - r0) * (c1 - c0)) * denom)
            }
        }
        return out
    }

    /// The k highest (index, score) pairs, highest first; equal scores by lower index first.
    static func topK(_ scores: [Float], _ k: Int) -> [(Int, Float)] {
        let order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        return order.prefix(k).map { ($0, scores[$0]) }
    }

    /// RGBA8 pixels of an image drawn 1:1 over white in device RGB (no resampling, no colour matching
    /// for the untagged PNGs that packages ship).
    static func pixels(_ image: CGImage) throws -> Pixels {
        let (w, h) = (image.width, image.height)
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let drawn = rgba.withUnsafeMutableBytes { buffer -> Bool in
            guard let ctx = CGContext(
                data: buffer.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                space: CGColorSpaceCreateDeviceRGB(),
                bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue
            ) else { return false }
            ctx.setFillColor(red: 1, green: 1, blue: 1, alpha: 1)
            ctx.fill(CGRect(x: 0, y: 0, width: w, height: h))
            ctx.interpolationQuality = .none
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard drawn else { throw DemoError("cannot draw image") }
        return Pixels(width: w, height: h, rgba: rgba)
    }
}
