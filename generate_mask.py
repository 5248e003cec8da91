"""Write SalUn's saliency mask for the pretrained model (then pass it to `-method SalUn --mask_path ...`).

Output: log_files/forget_full_class_main/{net}-{dataset}-{classes}/salun_masks/mask_{ratio}.pt
"""
from unlearn.core.cli import add_forget_class, base_parser, device_arg
from unlearn.methods.salun import write_mask
from unlearn.store.setting import Setting, run_cli


def main(argv=None, dataset_default: str = "Cifar20"):
    p = base_parser("Compute SalUn's weight saliency mask for the forget class.", dataset_default)
    p.add_argument("--mask_ratio", "--mask-ratio", type=float, default=0.5,
                   help="fraction of parameters kept (largest |forget-loss gradient|, one global threshold)")
    add_forget_class(p)
    p.add_argument("-weight_path", "--weight_path", "--weight-path", dest="weight_path", default=None,
                   help="pretrained checkpoint (default log_files/model/pretrain/{net}-{dataset}-{classes}/best.pth)")
    args = p.parse_args(argv)
    write_mask(Setting.from_args(args), ratio=args.mask_ratio, weight_path=args.weight_path,
               device=device_arg(args), batch_size=args.batch_size or 256)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
