"""The README's main job: build VMamba-T and show what it is (parameters, output shapes)."""
import torch

from vmamba.models import VMamba, VSSM


def main():
    model = VSSM(arch='tiny').eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f'VMamba-T (tiny_s1l8) classifier: {n_params:,} parameters')
    backbone = VMamba(arch='tiny').eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        print('logits:', tuple(model(x).shape))
        for i, feat in enumerate(backbone(x)):
            print(f'stage {i} feature map: {tuple(feat.shape)}')


if __name__ == '__main__':
    main()
