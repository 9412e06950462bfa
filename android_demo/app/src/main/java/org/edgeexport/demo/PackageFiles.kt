package org.edgeexport.demo

import android.content.Context
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.channels.FileChannel
import org.json.JSONObject

/** Read access to one package's files (paths relative to the package, as in the manifest). */
interface PackageFiles {
    fun bytes(relative: String): ByteArray

    /** The file memory-mapped (LiteRT reads the model from it). */
    fun mapped(relative: String): ByteBuffer

    /** A real file path (ExecuTorch loads from a path); [cacheKey] changes when the content does. */
    fun localFile(relative: String, cacheKey: String): File
}

/** A package bundled under assets/[root]/ (models/<path> for image models, llm/<dir> for LLMs). */
class AssetPackageFiles(private val context: Context, private val root: String) : PackageFiles {

    override fun bytes(relative: String): ByteArray =
        context.assets.open("$root/$relative").use { it.readBytes() }

    override fun mapped(relative: String): ByteBuffer =
        context.assets.openFd("$root/$relative").use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use {
                it.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }

    override fun localFile(relative: String, cacheKey: String): File {
        val dir = File(context.noBackupFilesDir, "models").apply { mkdirs() }
        val file = File(dir, "$cacheKey-${relative.substringAfterLast('/')}")
        if (!file.exists()) {
            val tmp = File(dir, "${file.name}.tmp")
            context.assets.open("$root/$relative").use { input -> tmp.outputStream().use { input.copyTo(it) } }
            check(tmp.renameTo(file)) { "cannot write $file" }
        }
        return file
    }

    companion object {
        /** The package's manifest plus its file access. */
        fun open(context: Context, entry: IndexEntry): Pair<ModelPackage, PackageFiles> {
            val files = AssetPackageFiles(context, "${ModelIndex.ROOT}/${entry.path}")
            val manifest = JSONObject(String(files.bytes("manifest.json"), Charsets.UTF_8))
            return ModelPackage.parse(entry.path, manifest) to files
        }
    }
}
