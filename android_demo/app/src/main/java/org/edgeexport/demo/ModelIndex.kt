package org.edgeexport.demo

import android.content.res.AssetManager
import org.json.JSONObject

/** One line of assets/models/index.json, written by `edge-export bundle`. */
data class IndexEntry(
    val name: String,
    val version: String,
    val target: String,
    val recipe: String,
    val path: String,
    val runtime: String,
) {
    val title: String get() = "$name $version · $target-$recipe"
}

object ModelIndex {
    const val ROOT = "models"

    fun load(assets: AssetManager): List<IndexEntry> {
        val text = runCatching { assets.open("$ROOT/index.json").bufferedReader().use { it.readText() } }
            .getOrElse { return emptyList() }
        val models = JSONObject(text).getJSONArray("models")
        return (0 until models.length()).map { i ->
            val m = models.getJSONObject(i)
            IndexEntry(
                name = m.getString("name"),
                version = m.getString("version"),
                target = m.getString("target"),
                recipe = m.getString("recipe"),
                path = m.getString("path"),
                runtime = m.getString("runtime"),
            )
        }
    }
}
