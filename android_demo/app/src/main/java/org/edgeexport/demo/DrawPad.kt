package org.edgeexport.demo

import android.graphics.Bitmap
import android.graphics.Paint
import androidx.compose.foundation.Canvas
import androidx.compose.foundation.background
import androidx.compose.foundation.gestures.detectDragGestures
import androidx.compose.runtime.Composable
import androidx.compose.runtime.mutableStateListOf
import androidx.compose.ui.Modifier
import androidx.compose.ui.geometry.Offset
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.graphics.Path
import androidx.compose.ui.graphics.StrokeCap
import androidx.compose.ui.graphics.StrokeJoin
import androidx.compose.ui.graphics.drawscope.Stroke
import androidx.compose.ui.input.pointer.pointerInput
import androidx.compose.ui.layout.onSizeChanged
import androidx.compose.ui.unit.IntSize
import org.edgeexport.demo.Images.toPixels

/** Strokes in pad coordinates: black ink on white, like a pen on paper. */
class Drawing {
    val strokes = mutableStateListOf<List<Offset>>()
    var size = IntSize(1, 1)

    val isEmpty: Boolean get() = strokes.isEmpty()

    fun clear() = strokes.clear()

    /** Renders to a square bitmap; the model's image_size is reached by Preprocess's area resize. */
    fun render(side: Int = RENDER_SIDE): Pixels {
        val bitmap = Bitmap.createBitmap(side, side, Bitmap.Config.ARGB_8888)
        val canvas = android.graphics.Canvas(bitmap)
        canvas.drawColor(android.graphics.Color.WHITE)
        val scale = side.toFloat() / maxOf(size.width, size.height)
        val paint = Paint().apply {
            color = android.graphics.Color.BLACK
            style = Paint.Style.STROKE
            strokeWidth = side * STROKE_FRACTION
            strokeCap = Paint.Cap.ROUND
            strokeJoin = Paint.Join.ROUND
            isAntiAlias = true
        }
        for (stroke in strokes) {
            val path = android.graphics.Path()
            stroke.forEachIndexed { i, p ->
                if (i == 0) path.moveTo(p.x * scale, p.y * scale) else path.lineTo(p.x * scale, p.y * scale)
            }
            if (stroke.size == 1) path.lineTo(stroke[0].x * scale + 0.1f, stroke[0].y * scale)
            canvas.drawPath(path, paint)
        }
        return bitmap.toPixels()
    }

    companion object {
        const val RENDER_SIDE = 256
        const val STROKE_FRACTION = 0.09f
    }
}

@Composable
fun DrawPad(drawing: Drawing, modifier: Modifier = Modifier) {
    Canvas(
        modifier
            .background(Color.White)
            .onSizeChanged { drawing.size = it }
            .pointerInput(drawing) {
                var current = mutableListOf<Offset>()
                detectDragGestures(
                    onDragStart = { start ->
                        current = mutableListOf(start)
                        drawing.strokes.add(current.toList())
                    },
                    onDrag = { change, _ ->
                        current.add(change.position)
                        drawing.strokes[drawing.strokes.lastIndex] = current.toList()
                    },
                )
            },
    ) {
        val width = size.minDimension * Drawing.STROKE_FRACTION
        for (stroke in drawing.strokes) {
            val path = Path()
            stroke.forEachIndexed { i, p -> if (i == 0) path.moveTo(p.x, p.y) else path.lineTo(p.x, p.y) }
            drawPath(path, Color.Black, style = Stroke(width, cap = StrokeCap.Round, join = StrokeJoin.Round))
        }
    }
}
