package org.edgeexport.demo

import kotlin.math.abs
import kotlin.math.log10
import kotlin.math.sqrt

/** Parity metrics as edge_export/parity.py computes them, over all samples of one output. */
object Metrics {
    const val SNR_CAP_DB = 200.0

    /** dot(a, b) / (|a| |b|); 1 when both are all zeros. */
    fun cosine(reference: FloatArray, actual: FloatArray): Double {
        var dot = 0.0
        var na = 0.0
        var nr = 0.0
        for (i in reference.indices) {
            dot += actual[i].toDouble() * reference[i]
            na += actual[i].toDouble() * actual[i]
            nr += reference[i].toDouble() * reference[i]
        }
        val denom = sqrt(na) * sqrt(nr)
        return when {
            denom > 0.0 -> dot / denom
            maxAbs(reference, actual) == 0.0 -> 1.0
            else -> 0.0
        }
    }

    /** 10 log10(sum ref^2 / sum (ref - out)^2), capped at +-200 dB like the pipeline. */
    fun snrDb(reference: FloatArray, actual: FloatArray): Double {
        var signal = 0.0
        var noise = 0.0
        for (i in reference.indices) {
            val r = reference[i].toDouble()
            val e = actual[i].toDouble() - r
            signal += r * r
            noise += e * e
        }
        return when {
            noise == 0.0 -> SNR_CAP_DB
            noise.isNaN() || noise.isInfinite() || signal == 0.0 -> -SNR_CAP_DB
            else -> minOf(SNR_CAP_DB, 10.0 * log10(signal / noise))
        }
    }

    fun maxAbs(reference: FloatArray, actual: FloatArray): Double =
        reference.indices.maxOfOrNull { abs(actual[it].toDouble() - reference[it]) } ?: 0.0

    fun argmax(values: FloatArray): Int = values.indices.maxByOrNull { values[it] } ?: -1

    /** Fraction of samples whose argmax agrees. */
    fun top1Agreement(reference: List<FloatArray>, actual: List<FloatArray>): Double =
        reference.indices.count { argmax(reference[it]) == argmax(actual[it]) }.toDouble() / reference.size
}
