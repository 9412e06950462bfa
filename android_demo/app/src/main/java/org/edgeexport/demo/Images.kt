package org.edgeexport.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory

object Images {
    /** Decodes PNG/JPEG bytes to unpremultiplied ARGB pixels (no colour conversion for untagged PNGs). */
    fun decode(bytes: ByteArray): Pixels {
        val options = BitmapFactory.Options().apply {
            inPremultiplied = false
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }
        val bitmap = BitmapFactory.decodeByteArray(bytes, 0, bytes.size, options)
            ?: throw IllegalArgumentException("cannot decode image")
        return bitmap.toPixels()
    }

    fun Bitmap.toPixels(): Pixels {
        val argb = IntArray(width * height)
        getPixels(argb, 0, width, 0, 0, width, height)
        return Pixels(width, height, argb)
    }
}
