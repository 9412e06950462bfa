package org.edgeexport.demo

import org.json.JSONArray
import org.json.JSONObject

data class TensorSpec(val name: String, val dtype: DType, val shape: LongArray)

/** Parity thresholds the on-device self-test applies (manifest `parity.thresholds`). */
data class Thresholds(
    val cosine: Double?,
    val snrDb: Double?,
    val top1Agreement: Double?,
    val maxAbs: Double?,
)

/** One golden sample: tensor name -> file path relative to the package. */
data class GoldenSample(val inputs: Map<String, String>, val outputs: Map<String, String>)

/** An image, the tensor it must preprocess to, and the model's expected top-k. */
data class AppVectors(val image: String, val tensor: String, val topK: List<Pair<Int, Double>>)

/** A bundled model package: everything the app knows about a model comes from manifest.json. */
class ModelPackage(
    val path: String,
    val name: String,
    val version: String,
    val target: String,
    val recipe: String,
    val runtime: String,
    val artifactPath: String,
    val artifactSha256: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val preprocessing: JSONObject,
    val labelsFile: String?,
    val thresholds: Thresholds,
    val golden: List<GoldenSample>,
    val appVectors: AppVectors?,
) {
    val title: String get() = "$name $version · $target-$recipe"

    companion object {
        fun parse(path: String, json: JSONObject): ModelPackage {
            val artifact = json.getJSONObject("artifact")
            val thresholds = json.getJSONObject("parity").getJSONObject("thresholds")
            return ModelPackage(
                path = path,
                name = json.getString("name"),
                version = json.getString("version"),
                target = json.getString("target"),
                recipe = json.getJSONObject("recipe").getString("name"),
                runtime = json.getJSONObject("runtime").getString("runtime"),
                artifactPath = artifact.getString("path"),
                artifactSha256 = artifact.getString("sha256"),
                inputs = tensors(json.getJSONArray("inputs")),
                outputs = tensors(json.getJSONArray("outputs")),
                preprocessing = json.optJSONObject("preprocessing") ?: JSONObject(),
                labelsFile = json.optJSONObject("labels")?.getString("file"),
                thresholds = Thresholds(
                    cosine = thresholds.optDoubleOrNull("cosine"),
                    snrDb = thresholds.optDoubleOrNull("snr_db"),
                    top1Agreement = thresholds.optDoubleOrNull("top1_agreement"),
                    maxAbs = thresholds.optDoubleOrNull("max_abs"),
                ),
                golden = json.getJSONObject("golden").getJSONArray("samples").objects().map {
                    GoldenSample(it.getJSONObject("inputs").strings(), it.getJSONObject("outputs").strings())
                },
                appVectors = json.optJSONObject("app_vectors")?.let { v ->
                    AppVectors(
                        image = v.getString("image"),
                        tensor = v.getString("tensor"),
                        topK = v.getJSONArray("top_k").let { arr ->
                            (0 until arr.length()).map { arr.getJSONArray(it).let { p -> p.getInt(0) to p.getDouble(1) } }
                        },
                    )
                },
            )
        }

        private fun tensors(array: JSONArray): List<TensorSpec> = array.objects().map { t ->
            val shape = t.getJSONArray("shape")
            TensorSpec(
                name = t.getString("name"),
                dtype = DType.of(t.getString("dtype")),
                shape = LongArray(shape.length()) { shape.getLong(it) },
            )
        }

        private fun JSONArray.objects(): List<JSONObject> = (0 until length()).map { getJSONObject(it) }

        private fun JSONObject.strings(): Map<String, String> = keys().asSequence().associateWith { getString(it) }

        private fun JSONObject.optDoubleOrNull(key: String): Double? = if (has(key)) getDouble(key) else null
    }
}
