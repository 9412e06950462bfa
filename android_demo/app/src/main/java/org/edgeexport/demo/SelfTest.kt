package org.edgeexport.demo

import kotlin.math.abs

/** One threshold check on one output; [margin] < 0 means it failed. */
data class Check(val output: String, val metric: String, val value: Double, val limit: Double) {
    private val atMost: Boolean get() = metric == "max_abs"
    val margin: Double get() = (if (atMost) limit - value else value - limit) / maxOf(abs(limit), 1e-12)
    val passed: Boolean get() = margin >= 0.0
    override fun toString(): String = "$output $metric ${"%.6g".format(value)} (${if (atMost) "≤" else "≥"} $limit)"
}

data class OutputResult(val name: String, val checks: List<Check>) {
    val passed: Boolean get() = checks.all { it.passed }
}

data class SelfTestReport(val model: String, val outputs: List<OutputResult>, val notes: List<String>, val error: String?) {
    val passed: Boolean get() = error == null && outputs.isNotEmpty() && outputs.all { it.passed }

    /** The check closest to (or furthest past) its threshold. */
    val worst: Check? get() = outputs.flatMap { it.checks }.minByOrNull { it.margin }
}

/** Tolerance between the app's preprocessed tensor and the package's expected one. */
const val APP_TENSOR_TOLERANCE = 1e-4

/**
 * Runs every golden input and compares with the golden outputs at the manifest's
 * parity thresholds, then checks the app's own preprocessing against `app_vectors`.
 */
class SelfTest(private val pkg: ModelPackage, private val files: PackageFiles) {
    fun run(runner: Runner): SelfTestReport = try {
        val actual = pkg.golden.map { sample -> runner.run(pkg.inputs.map { load(it, sample.inputs) }) }
        val reference = pkg.golden.map { sample -> pkg.outputs.map { load(it, sample.outputs) } }
        val outputs = pkg.outputs.mapIndexed { i, spec ->
            compare(spec, reference.map { it[i].toFloatArray() }, actual.map { it[i].toFloatArray() })
        }
        SelfTestReport(pkg.title, outputs, appVectorNotes(runner), null)
    } catch (e: Exception) {
        SelfTestReport(pkg.title, emptyList(), emptyList(), e.message ?: e.javaClass.simpleName)
    }

    private fun load(spec: TensorSpec, paths: Map<String, String>): HostTensor {
        val path = paths[spec.name] ?: throw IllegalStateException("golden sample has no '${spec.name}'")
        return HostTensor(spec.name, spec.dtype, spec.shape, files.bytes(path))
    }

    private fun compare(spec: TensorSpec, reference: List<FloatArray>, actual: List<FloatArray>): OutputResult {
        reference.zip(actual).forEach { (r, a) ->
            require(r.size == a.size) { "${spec.name}: ${a.size} values, golden has ${r.size}" }
        }
        val ref = reference.flatMap { it.asIterable() }.toFloatArray()
        val act = actual.flatMap { it.asIterable() }.toFloatArray()
        val t = pkg.thresholds
        val classifier = spec.shape.size == 2 && spec.shape[1] >= 2
        val checks = listOfNotNull(
            t.cosine?.let { Check(spec.name, "cosine", Metrics.cosine(ref, act), it) },
            t.snrDb?.let { Check(spec.name, "snr_db", Metrics.snrDb(ref, act), it) },
            t.maxAbs?.let { Check(spec.name, "max_abs", Metrics.maxAbs(ref, act), it) },
            t.top1Agreement?.takeIf { classifier }?.let {
                Check(spec.name, "top1_agreement", Metrics.top1Agreement(reference, actual), it)
            },
        )
        return OutputResult(spec.name, checks)
    }

    /** The shipped image must preprocess to the shipped tensor and rank the same top-1. */
    private fun appVectorNotes(runner: Runner): List<String> {
        val vectors = pkg.appVectors ?: return emptyList()
        val input = pkg.inputs.first()
        val spec = Preprocess.resolve(pkg.preprocessing, input.shape) ?: return emptyList()
        val ours = Preprocess.toTensor(Images.decode(files.bytes(vectors.image)), spec)
        val expected = HostTensor(input.name, DType.FLOAT32, input.shape, files.bytes(vectors.tensor)).toFloatArray()
        val diff = Metrics.maxAbs(expected, ours)
        val scores = runner.run(listOf(HostTensor.fromFloats(input.name, input.dtype, input.shape, ours)))
            .first().toFloatArray()
        val top1 = Preprocess.topK(scores, 1).first().first
        val wanted = vectors.topK.firstOrNull()?.first
        check(diff <= APP_TENSOR_TOLERANCE) { "app preprocessing differs from app_vectors tensor by $diff" }
        check(wanted == null || top1 == wanted) { "app image gives top-1 $top1, app_vectors expects $wanted" }
        return listOf("app preprocessing max |Δ| ${"%.3g".format(diff)}, top-1 $top1 as expected")
    }
}
