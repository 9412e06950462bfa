package org.edgeexport.demo

import org.json.JSONObject

/** Pixels as Android gives them: ARGB_8888 ints, row-major, not premultiplied. */
class Pixels(val width: Int, val height: Int, val argb: IntArray)

/** The manifest's `preprocessing` with its defaults filled in (docs/app-spec.md). */
data class ImageSpec(
    val layout: String,
    val colour: String,
    val height: Int,
    val width: Int,
    val scale: Double,
    val mean: DoubleArray,
    val std: DoubleArray,
    val invert: Boolean,
) {
    val channels: Int get() = if (colour == "grayscale") 1 else 3
}

/**
 * The app preprocessing spec, mirrored from edge_export/preprocess.py step by step:
 * integer numerators, an integer area sum, one division in double, then
 * invert -> (x * scale - mean) / std, cast to float at the end.
 */
object Preprocess {
    private val channelsOf = mapOf("grayscale" to 1, "rgb" to 3, "bgr" to 3)

    /** Null when the input is not an image (layout "none" or an unusable shape). */
    fun resolve(p: JSONObject, shape: LongArray): ImageSpec? {
        val layout = p.optString("layout", "NCHW")
        if (layout != "NCHW" && layout != "NHWC") return null
        val dims = (if (shape.size == 4 && shape[0] == 1L) shape.drop(1) else shape.toList()).map { it.toInt() }
        if (dims.size != 3) return null
        val (c, h, w) = if (layout == "NCHW") dims else listOf(dims[2], dims[0], dims[1])
        val colour = p.optString("colour", if (c == 1) "grayscale" else "rgb")
        if (channelsOf[colour] != c) return null
        val size = p.optJSONArray("image_size")
        if (size != null && (size.getInt(0) != h || size.getInt(1) != w)) return null
        return ImageSpec(
            layout = layout,
            colour = colour,
            height = h,
            width = w,
            scale = p.optDouble("scale", 1.0),
            mean = perChannel(p.optJSONArray("mean")?.let { a -> DoubleArray(a.length()) { a.getDouble(it) } }, c, 0.0),
            std = perChannel(p.optJSONArray("std")?.let { a -> DoubleArray(a.length()) { a.getDouble(it) } }, c, 1.0),
            invert = p.optBoolean("invert", false),
        )
    }

    private fun perChannel(values: DoubleArray?, channels: Int, default: Double): DoubleArray = when {
        values == null || values.isEmpty() -> DoubleArray(channels) { default }
        values.size == 1 -> DoubleArray(channels) { values[0] }
        else -> values
    }

    /** The float model input, flattened in the layout's order. */
    fun toTensor(pixels: Pixels, spec: ImageSpec): FloatArray {
        val (planes, denom) = numerators(pixels, spec.colour)
        val out = FloatArray(spec.channels * spec.height * spec.width)
        for (c in planes.indices) {
            val x = areaResize(planes[c], pixels.width, pixels.height, denom, spec.width, spec.height)
            for (i in 0 until spec.height) {
                for (j in 0 until spec.width) {
                    var v = x[i * spec.width + j]
                    if (spec.invert) v = 255.0 - v
                    v = (v * spec.scale - spec.mean[c]) / spec.std[c]
                    val index = if (spec.layout == "NCHW") {
                        (c * spec.height + i) * spec.width + j
                    } else {
                        (i * spec.width + j) * spec.channels + c
                    }
                    out[index] = v.toFloat()
                }
            }
        }
        return out
    }

    /** Integer planes N and one denominator D; a channel value is N / D. */
    private fun numerators(pixels: Pixels, colour: String): Pair<List<LongArray>, Long> {
        val n = pixels.argb.size
        val opaque = pixels.argb.all { (it ushr 24) == 0xFF }
        val r = LongArray(n)
        val g = LongArray(n)
        val b = LongArray(n)
        for (k in 0 until n) {
            val p = pixels.argb[k]
            val a = (p ushr 24) and 0xFF
            val rgb = intArrayOf((p shr 16) and 0xFF, (p shr 8) and 0xFF, p and 0xFF)
            val comp = if (opaque) rgb.map { it.toLong() } else rgb.map { (it * a + 255 * (255 - a)).toLong() }
            r[k] = comp[0]
            g[k] = comp[1]
            b[k] = comp[2]
        }
        val denom = if (opaque) 1L else 255L
        return when (colour) {
            "grayscale" -> listOf(LongArray(n) { 299 * r[it] + 587 * g[it] + 114 * b[it] }) to denom * 1000
            "bgr" -> listOf(b, g, r) to denom
            else -> listOf(r, g, b) to denom
        }
    }

    /** Source range [start, end) averaged into output index [i] (area; nearest when upscaling). */
    fun span(i: Int, src: Int, dst: Int): Pair<Int, Int> {
        val start = ((i.toLong() * src) / dst).toInt()
        val end = (((i + 1).toLong() * src) / dst).toInt()
        return start to maxOf(end, start + 1)
    }

    private fun areaResize(plane: LongArray, srcW: Int, srcH: Int, denom: Long, outW: Int, outH: Int): DoubleArray {
        val out = DoubleArray(outW * outH)
        for (i in 0 until outH) {
            val (r0, r1) = span(i, srcH, outH)
            for (j in 0 until outW) {
                val (c0, c1) = span(j, srcW, outW)
                var total = 0L
                for (r in r0 until r1) for (c in c0 until c1) total += plane[r * srcW + c]
                out[i * outW + j] = total.toDouble() / ((r1 - r0).toLong() * (c1 - c0) * denom).toDouble()
            }
        }
        return out
    }

    /** The k highest (index, score) pairs, highest first; equal scores by lower index first. */
    fun topK(scores: FloatArray, k: Int): List<Pair<Int, Float>> =
        scores.indices.sortedWith(compareByDescending<Int> { scores[it] }.thenBy { it })
            .take(k)
            .map { it to scores[it] }
}
