package org.edgeexport.demo

import android.util.Half
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** The manifest's tensor dtypes (schema `$defs/tensor/dtype`) and their sizes in bytes. */
enum class DType(val id: String, val bytes: Int) {
    FLOAT32("float32", 4),
    FLOAT16("float16", 2),
    INT64("int64", 8),
    INT32("int32", 4),
    INT8("int8", 1),
    UINT8("uint8", 1),
    BOOL("bool", 1);

    companion object {
        private val byId = entries.associateBy { it.id }

        fun of(id: String): DType = byId[id] ?: throw IllegalArgumentException("unknown dtype '$id'")
    }
}

/**
 * A tensor as raw little-endian bytes: the golden file format, and what runners exchange.
 * Keeping bytes (not floats) lets integer inputs reach the runtime unchanged.
 */
class HostTensor(val name: String, val dtype: DType, val shape: LongArray, val bytes: ByteArray) {
    val numel: Long get() = shape.fold(1L) { acc, d -> acc * d }

    init {
        require(bytes.size.toLong() == numel * dtype.bytes) {
            "$name: ${bytes.size} bytes do not fit ${dtype.id}${shape.contentToString()}"
        }
    }

    private fun buffer(): ByteBuffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)

    /** Every element widened to float, for metrics and top-k. */
    fun toFloatArray(): FloatArray {
        val b = buffer()
        return FloatArray(numel.toInt()) {
            when (dtype) {
                DType.FLOAT32 -> b.getFloat()
                DType.FLOAT16 -> Half.toFloat(b.getShort())
                DType.INT64 -> b.getLong().toFloat()
                DType.INT32 -> b.getInt().toFloat()
                DType.INT8 -> b.get().toFloat()
                DType.UINT8, DType.BOOL -> (b.get().toInt() and 0xFF).toFloat()
            }
        }
    }

    fun floats(): FloatArray = FloatArray(numel.toInt()).also { buffer().asFloatBuffer().get(it) }

    fun halves(): ShortArray = ShortArray(numel.toInt()).also { buffer().asShortBuffer().get(it) }

    fun longs(): LongArray = LongArray(numel.toInt()).also { buffer().asLongBuffer().get(it) }

    fun ints(): IntArray = IntArray(numel.toInt()).also { buffer().asIntBuffer().get(it) }

    companion object {
        private fun le(size: Int): ByteBuffer = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN)

        fun ofFloats(name: String, shape: LongArray, values: FloatArray) =
            HostTensor(name, DType.FLOAT32, shape, le(values.size * 4).apply { asFloatBuffer().put(values) }.array())

        fun ofHalves(name: String, shape: LongArray, values: ShortArray) =
            HostTensor(name, DType.FLOAT16, shape, le(values.size * 2).apply { asShortBuffer().put(values) }.array())

        fun ofLongs(name: String, shape: LongArray, values: LongArray) =
            HostTensor(name, DType.INT64, shape, le(values.size * 8).apply { asLongBuffer().put(values) }.array())

        fun ofInts(name: String, shape: LongArray, values: IntArray) =
            HostTensor(name, DType.INT32, shape, le(values.size * 4).apply { asIntBuffer().put(values) }.array())

        /** A float model input in the dtype the manifest asks for. */
        fun fromFloats(name: String, dtype: DType, shape: LongArray, values: FloatArray): HostTensor = when (dtype) {
            DType.FLOAT32 -> ofFloats(name, shape, values)
            DType.FLOAT16 -> ofHalves(name, shape, ShortArray(values.size) { Half.toHalf(values[it]) })
            else -> throw IllegalArgumentException("$name: an image cannot feed a ${dtype.id} input")
        }
    }
}
