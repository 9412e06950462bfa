import Foundation

/// The manifest's tensor dtypes (schema `$defs/tensor/dtype`) and their sizes in bytes.
enum DType: String, Decodable, CaseIterable {
    case float32, float16, int64, int32, int8, uint8, bool

    var bytes: Int {
        switch self {
        case .float32, .int32: return 4
        case .float16: return 2
        case .int64: return 8
        case .int8, .uint8, .bool: return 1
        }
    }
}

/// A tensor as raw little-endian bytes: the golden file format, and what runners exchange.
struct HostTensor {
    let name: String
    let dtype: DType
    let shape: [Int]
    let data: Data

    var count: Int { shape.reduce(1, *) }

    init(name: String, dtype: DType, shape: [Int], data: Data) throws {
        guard data.count == shape.reduce(1, *) * dtype.bytes else {
            throw DemoError("\(name): \(data.count) bytes do not fit \(dtype.rawValue)\(shape)")
        }
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }

    static func float32(name: String, shape: [Int], values: [Float]) throws -> HostTensor {
        var bytes = Data(capacity: values.count * 4)
        for v in values {
            withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return try HostTensor(name: name, dtype: .float32, shape: shape, data: bytes)
    }

    /// Every element widened to Float, for metrics, top-k and Core ML inputs.
    func floats() -> [Float] {
        data.withUnsafeBytes { raw in
            (0..<count).map { i in
                let at = i * dtype.bytes
                switch dtype {
                case .float32:
                    return Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
                case .float16:
                    return halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
                case .int64:
                    return Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self)))
                case .int32:
                    return Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self)))
                case .int8:
                    return Float(raw.load(fromByteOffset: at, as: Int8.self))
                case .uint8, .bool:
                    return Float(raw.load(fromByteOffset: at, as: UInt8.self))
                }
            }
        }
    }
}

/// IEEE half bits to Float without `Float16`, which Intel-Mac simulators lack.
func halfToFloat(_ h: UInt16) -> Float {
    let sign: UInt32 = UInt32(h >> 15) << 31
    let exponent = UInt32((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0 {
        let value = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
        return sign == 0 ? value : -value
    }
    if exponent == 0x1F {
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}
