package org.edgeexport.demo

import android.content.Context
import org.json.JSONArray
import org.json.JSONObject

/** The golden prompt an LLM package ships, and the greedy continuation the artifact produced. */
data class LlmGolden(val prompt: String, val promptIds: List<Int>, val continuationIds: List<Int>, val continuationText: String)

/**
 * An android LLM package (`edge-export llm --target android`) copied to
 * assets/llm/<dir>/: the `.pte`, `tokenizer.json` and the golden prompts, read from its
 * manifest (`kind: "llm"`, schema `llm-manifest.schema.json`). ExecuTorch's LLM runner
 * reads max context, BOS/EOS and vocabulary size from the `.pte`'s own metadata methods.
 */
data class LlmPackage(
    val dir: String,
    val name: String,
    val recipe: String,
    val artifactPath: String,
    val artifactSha256: String,
    val tokenizerPath: String,
    val maxContext: Int,
    val eosIds: List<Int>,
    val goldenPaths: List<String>,
) {
    /** This package's files in the app's assets (the same access image-model packages use). */
    fun files(context: Context): PackageFiles = AssetPackageFiles(context, "$ROOT/$dir")

    fun golden(context: Context, index: Int): LlmGolden {
        val json = JSONObject(String(files(context).bytes(goldenPaths[index]), Charsets.UTF_8))
        return LlmGolden(
            json.getString("prompt"),
            ints(json.getJSONArray("prompt_ids")),
            ints(json.getJSONArray("continuation_ids")),
            json.getString("continuation_text"),
        )
    }

    companion object {
        const val ROOT = "llm"

        /** Every android LLM package under assets/llm/, skipping other kinds and targets. */
        fun list(context: Context): List<LlmPackage> =
            (context.assets.list(ROOT) ?: emptyArray()).sorted().mapNotNull { dir ->
                val text = runCatching {
                    String(AssetPackageFiles(context, "$ROOT/$dir").bytes("manifest.json"), Charsets.UTF_8)
                }.getOrNull() ?: return@mapNotNull null
                parse(dir, JSONObject(text))
            }

        fun parse(dir: String, manifest: JSONObject): LlmPackage? {
            if (manifest.optString("kind") != "llm" || manifest.optString("target") != "android") return null
            val artifact = manifest.getJSONObject("artifact")
            val generation = manifest.getJSONObject("generation")
            val golden = manifest.getJSONArray("golden")
            return LlmPackage(
                dir = dir,
                name = manifest.getString("name"),
                recipe = manifest.getJSONObject("recipe").getString("name"),
                artifactPath = artifact.getString("path"),
                artifactSha256 = artifact.getString("sha256"),
                tokenizerPath = manifest.getJSONObject("tokenizer").getString("path"),
                maxContext = generation.getInt("max_context"),
                eosIds = ints(generation.getJSONArray("eos_token_ids")),
                goldenPaths = (0 until golden.length()).map { golden.getJSONObject(it).getString("path") },
            )
        }

        private fun ints(array: JSONArray): List<Int> = (0 until array.length()).map { array.getInt(it) }
    }
}
