import SwiftUI
import UIKit

/// Strokes in pad coordinates: black ink on white, like a pen on paper.
struct Drawing {
    static let renderSide = 256
    static let strokeFraction: CGFloat = 0.09

    var strokes: [[CGPoint]] = []
    var isEmpty: Bool { strokes.isEmpty }

    /// Renders to a square image at scale 1; the model's image_size is reached by Preprocess's area resize.
    func render(padSide: CGFloat) throws -> Pixels {
        let side = CGFloat(Self.renderSide)
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        format.opaque = true
        let image = UIGraphicsImageRenderer(size: CGSize(width: side, height: side), format: format).image { ctx in
            UIColor.white.setFill()
            ctx.fill(CGRect(x: 0, y: 0, width: side, height: side))
            let k = side / max(padSide, 1)
            for stroke in strokes {
                let path = UIBezierPath()
                path.lineWidth = side * Self.strokeFraction
                path.lineCapStyle = .round
                path.lineJoinStyle = .round
                for (i, p) in stroke.enumerated() {
                    let q = CGPoint(x: p.x * k, y: p.y * k)
                    if i == 0 { path.move(to: q) } else { path.addLine(to: q) }
                }
                if stroke.count == 1 { path.addLine(to: CGPoint(x: stroke[0].x * k + 0.1, y: stroke[0].y * k)) }
                UIColor.black.setStroke()
                path.stroke()
            }
        }
        guard let cg = image.cgImage else { throw DemoError("cannot render drawing") }
        return try Preprocess.pixels(cg)
    }
}

struct DrawPad: View {
    @Binding var drawing: Drawing
    let side: CGFloat

    var body: some View {
        Canvas { context, size in
            for stroke in drawing.strokes {
                var path = Path()
                path.addLines(stroke)
                if stroke.count == 1, let p = stroke.first { path.addLine(to: CGPoint(x: p.x + 0.1, y: p.y)) }
                context.stroke(
                    path, with: .color(.black),
                    style: StrokeStyle(lineWidth: size.width * Drawing.strokeFraction, lineCap: .round, lineJoin: .round)
                )
            }
        }
        .frame(width: side, height: side)
        .background(Color.white)
        .border(Color.gray)
        .gesture(
            DragGesture(minimumDistance: 0)
                .onChanged { value in
                    if value.translation == .zero || drawing.strokes.isEmpty {
                        drawing.strokes.append([value.location])
                    } else {
                        drawing.strokes[drawing.strokes.count - 1].append(value.location)
                    }
                }
        )
    }
}
